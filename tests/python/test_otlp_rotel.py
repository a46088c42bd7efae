"""The otlp exporter against an independent OTLP implementation: the Python SDK sends to a
sidetrace sidecar, which forwards over OTLP/HTTP (gzip) to rotel (PyPI `rotel`); rotel decodes
and exports over OTLP/gRPC to a sidetrace gateway, where every span must arrive as the SDK made it."""
import json
import os
import stat
import subprocess
import time

import rotel
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from conftest import free_port, start_agent

ROTEL = os.path.join(os.path.dirname(rotel.__file__), "rotel-agent")


def stop(agent):
    agent.proc.terminate()
    assert agent.proc.wait(timeout=30) == 0


def test_spans_cross_rotel_intact():
    os.chmod(ROTEL, os.stat(ROTEL).st_mode | stat.S_IXUSR)
    gateway = start_agent(["--exporters", "local"])
    rotel_http = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [ROTEL, "start", "--otlp-grpc-endpoint", f"127.0.0.1:{free_port()}",
         "--otlp-http-endpoint", rotel_http, "--exporter", "otlp",
         "--otlp-exporter-endpoint", f"http://{gateway.grpc}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sidecar = start_agent(
        ["--exporters", "otlp", "--sampling-ratio", "1", "--set", "otlp.idle_flush=50ms"],
        {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{rotel_http}",
         "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"})
    try:
        memory = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": "py-rotel", "team": "payments"}))
        provider.add_span_processor(SimpleSpanProcessor(memory))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"http://{sidecar.grpc}", insecure=True)))
        tracer = provider.get_tracer("rotel-interop")
        with tracer.start_as_current_span("GET /orders/{id}", kind=SpanKind.SERVER) as root:
            root.set_attribute("http.request.method", "GET")
            root.set_attribute("http.response.status_code", 500)
            root.set_attribute("ratio", 0.25)
            root.set_attribute("tags", ["a", "ünïcödé"])
            for i in range(5):
                with tracer.start_as_current_span(f"SELECT orders {i}", kind=SpanKind.CLIENT) as child:
                    child.set_attribute("db.system", "postgresql")
                    child.set_attribute("attempt", i)
                    child.add_event("retry", {"delay_ms": 10 * i})
            root.set_status(Status(StatusCode.ERROR, "upstream failed"))
        provider.shutdown()
        made = memory.get_finished_spans()
        trace_id = format(made[0].context.trace_id, "032x")
        doc = None
        for _ in range(300):
            try:
                status, body = gateway.get(f"/api/traces/{trace_id}")
                doc = json.loads(body)
                if len(doc.get("spans", [])) == len(made):
                    break
            except Exception:
                pass
            time.sleep(0.05)
        assert doc and len(doc["spans"]) == len(made), doc
        got = {s["span_id"]: s for s in doc["spans"]}
        for span in made:
            g = got[format(span.context.span_id, "016x")]
            assert g["name"] == span.name
            assert g["start_time_unix_nano"] == span.start_time
            assert g["end_time_unix_nano"] == span.end_time
            parent = format(span.parent.span_id, "016x") if span.parent else None
            assert g["parent_span_id"] == parent
            assert g["attributes"] == {k: (list(v) if isinstance(v, tuple) else v)
                                       for k, v in span.attributes.items()}
            assert [e["name"] for e in g["events"]] == [e.name for e in span.events]
            assert g["resource"]["team"] == "payments" and g["service"] == "py-rotel"
        root_doc = got[format(made[-1].context.span_id, "016x")]
        assert root_doc["status"] == {"code": "error", "message": "upstream failed"}
    finally:
        stop(sidecar)
        proc.terminate()
        proc.wait(timeout=10)
        stop(gateway)
