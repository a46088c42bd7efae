"""The Python OpenTelemetry SDK exports to the real sidetrace binary over gRPC and HTTP."""
import json
import time

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client.parser import text_string_to_metric_families


def send_trace(exporter):
    provider = TracerProvider(resource=Resource.create({"service.name": "py-shop"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("py-test")
    with tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER) as root:
        root.set_attribute("http.request.method", "POST")
        with tracer.start_as_current_span("charge card", kind=SpanKind.CLIENT) as child:
            child.set_attribute("retries", 2)
            child.add_event("exception", {"exception.type": "Timeout"})
            child.set_status(Status(StatusCode.ERROR, "card declined"))
        trace_id = format(root.get_span_context().trace_id, "032x")
    provider.shutdown()
    return trace_id




@pytest.mark.parametrize("kind", ["grpc", "http", "http-gzip"])
def test_python_sdk_traces_arrive(agent, kind):
    if kind == "grpc":
        exporter = GrpcExporter(endpoint=f"http://{agent.grpc}", insecure=True)
    else:
        exporter = HttpExporter(endpoint=f"http://{agent.http}/v1/traces",
                                compression=Compression.Gzip if kind == "http-gzip" else Compression.NoCompression)
    trace_id = send_trace(exporter)
    doc = None
    for _ in range(200):
        try:
            status, body = agent.get(f"/api/traces/{trace_id}")
            doc = json.loads(body)
            if len(doc["spans"]) == 2:
                break
        except Exception:
            pass
        time.sleep(0.02)
    assert doc and len(doc["spans"]) == 2, doc
    by_name = {s["name"]: s for s in doc["spans"]}
    root, child = by_name["POST /orders"], by_name["charge card"]
    assert root["kind"] == "server" and root["parent_span_id"] is None
    assert child["parent_span_id"] == root["span_id"]
    assert child["service"] == "py-shop"
    assert child["attributes"]["retries"] == 2
    assert child["status"] == {"code": "error", "message": "card declined"}
    assert child["events"][0]["attributes"]["exception.type"] == "Timeout"


def test_metrics_parse_with_prometheus_parser(agent):
    send_trace(GrpcExporter(endpoint=f"http://{agent.grpc}", insecure=True))
    time.sleep(0.2)
    status, body = agent.get("/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    accepted = families["sidetrace_receiver_spans_accepted"]
    grpc = [s for s in accepted.samples if s.labels.get("protocol") == "grpc" and s.name.endswith("_total")]
    assert grpc and grpc[0].value == 2
    assert families["sidetrace_queue_capacity_spans"].samples[0].value > 0
    assert families["sidetrace_ready"].samples[0].value == 1
