"""Python OpenTelemetry SDK → sidetrace → X-Ray (moto); read back with boto3's BatchGetTraces."""
import json
import time

import boto3
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind


def test_python_spans_reach_xray(xray_agent, moto_url):
    provider = TracerProvider(resource=Resource.create({"service.name": "py-billing"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"http://{xray_agent.http}/v1/traces")))
    tracer = provider.get_tracer("py-xray")
    with tracer.start_as_current_span("POST /invoices", kind=SpanKind.SERVER) as root:
        root.set_attribute("http.request.method", "POST")
        root.set_attribute("http.response.status_code", 201)
        with tracer.start_as_current_span("PutItem", kind=SpanKind.CLIENT) as ddb:
            ddb.set_attribute("rpc.system", "aws-api")
            ddb.set_attribute("rpc.service", "DynamoDB")
            ddb.set_attribute("rpc.method", "PutItem")
            ddb.set_attribute("aws.dynamodb.table_names", ["invoices"])
        tid = format(root.get_span_context().trace_id, "032x")
    provider.shutdown()
    xray_id = f"1-{tid[:8]}-{tid[8:]}"

    client = boto3.client("xray", region_name="us-east-1", endpoint_url=moto_url,
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    docs = []
    for _ in range(100):
        traces = client.batch_get_traces(TraceIds=[xray_id])["Traces"]
        docs = [json.loads(s["Document"]) for t in traces for s in t["Segments"]]
        if len(docs) == 2:
            break
        time.sleep(0.2)
    assert len(docs) == 2, docs
    seg = next(d for d in docs if "type" not in d)
    sub = next(d for d in docs if d.get("type") == "subsegment")
    assert seg["name"] == "py-billing" and seg["trace_id"] == xray_id
    assert seg["http"]["request"]["method"] == "POST" and seg["http"]["response"]["status"] == 201
    assert sub["parent_id"] == seg["id"] and sub["namespace"] == "aws"
    assert sub["name"] == "DynamoDB"
    assert sub["aws"]["operation"] == "PutItem" and sub["aws"]["table_name"] == "invoices"
