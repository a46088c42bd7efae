"""Span metrics from the Python OpenTelemetry SDK: the whole /metrics page parses with Prometheus'
own Python parser (label values with quotes, backslashes, newlines and non-ASCII included), the
histograms are well formed, and /api/metrics agrees with what was sent."""
import json
import time

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client.parser import text_string_to_metric_families

WEIRD_SERVICE = 'py "quoted" \\ back\nslash ünïcödé'


def send(agent):
    provider = TracerProvider(resource=Resource.create({"service.name": WEIRD_SERVICE}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"http://{agent.grpc}", insecure=True)))
    tracer = provider.get_tracer("py-metrics")
    now = time.time_ns()
    for i in range(40):
        ms = 5 if i < 30 else 80
        span = tracer.start_span("GET /items/{id}", kind=SpanKind.SERVER, start_time=now - ms * 1_000_000,
                                 attributes={"http.request.method": "GET", "http.route": "/items/{id}",
                                             "http.response.status_code": 500 if i >= 36 else 200})
        span.end(end_time=now)
    for i in range(10):
        span = tracer.start_span('op "with" {braces}, commas=and\\slashes', kind=SpanKind.INTERNAL,
                                 start_time=now - 2_000_000)
        span.set_status(Status(StatusCode.ERROR, "bad"))
        span.end(end_time=now)
    for n in range(200):
        span = tracer.start_span("GET", kind=SpanKind.CLIENT, start_time=now - 1_000_000,
                                 attributes={"http.request.method": "GET", "url.path": f"/users/{n}/cart"})
        span.end(end_time=now)
    provider.shutdown()


def test_span_metrics_parse_with_the_prometheus_parser(agent):
    send(agent)
    for _ in range(100):
        status, body = agent.get("/metrics")
        if b"/users/{id}/cart" in body:
            break
        time.sleep(0.05)
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    hist = families["sidetrace_span_duration_seconds"]
    assert hist.type == "histogram"
    by_series = {}
    for s in hist.samples:
        key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
        by_series.setdefault(key, []).append(s)
    items = [k for k in by_series if dict(k)["operation"] == "GET /items/{id}"]
    assert {dict(k)["status"] for k in items} == {"ok", "fault"}
    for key, samples in by_series.items():
        labels = dict(key)
        assert labels["service"] == WEIRD_SERVICE
        buckets = [s for s in samples if s.name.endswith("_bucket")]
        les = [float(s.labels["le"]) for s in buckets]
        assert les == sorted(les) and les[-1] == float("inf")
        values = [s.value for s in buckets]
        assert values == sorted(values), "buckets are cumulative"
        count = next(s.value for s in samples if s.name.endswith("_count"))
        assert values[-1] == count
        assert next(s.value for s in samples if s.name.endswith("_sum")) > 0
    ok = dict(next(k for k in items if dict(k)["status"] == "ok"))
    ok_buckets = {s.labels["le"]: s.value for s in by_series[tuple(sorted(ok.items()))] if s.name.endswith("_bucket")}
    assert ok_buckets["0.005"] == 30 and ok_buckets["0.1"] == 36
    weird_op = [k for k in by_series if dict(k)["operation"] == 'op "with" {braces}, commas=and\\slashes']
    assert len(weird_op) == 1 and dict(weird_op[0])["status"] == "fault"
    # 200 distinct URL paths, one series.
    assert len([k for k in by_series if dict(k)["operation"] == "GET /users/{id}/cart"]) == 1
    spans = {tuple(sorted(s.labels.items())): s.value for s in families["sidetrace_spans"].samples}
    assert sum(spans.values()) == 250
    errors = [s for s in families["sidetrace_span_errors"].samples if s.labels["operation"] == "GET /items/{id}"]
    assert errors[0].value == 4
    assert families["sidetrace_span_metrics_series_limit"].samples[0].value == 500

    status, body = agent.get("/api/metrics")
    doc = json.loads(body)
    row = next(r for r in doc["series"] if r["operation"] == "GET /items/{id}")
    assert row["count"] == 40 and row["errors"] == 4 and row["error_rate"] == 0.1
    assert abs(row["p50_ms"] - 5) / 5 < 0.002 and abs(row["max_ms"] - 80) / 80 < 0.002
