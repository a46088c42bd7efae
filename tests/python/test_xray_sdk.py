"""The real X-Ray SDKs (Python aws-xray-sdk, Node.js aws-xray-sdk-core) against sidetrace's X-Ray
daemon port: X-Ray (moto) stores each document exactly as the SDK sent it, span metrics and the
local store see the segments, and centralised sampling works through the proxy against a fake
X-Ray that checks every call's SigV4 signature with botocore's signer."""
import http.client
import json
import math
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import boto3
import pytest
from aws_xray_sdk.core import AWSXRayRecorder
from aws_xray_sdk.core.emitters.udp_emitter import UDPEmitter
from prometheus_client.parser import text_string_to_metric_families

from conftest import ROOT, start_agent
from xray_fake import KEY, REGION, SECRET, TOKEN, FakeXray, wait_until

HEADER = '{"format":"json","version":1}'
NODE_DIR = os.path.join(ROOT, "tests", "node")


@pytest.fixture(autouse=True)
def no_sdk_env(monkeypatch):
    """The SDKs read these before their own configuration; a developer's shell must not leak in."""
    for k in ("AWS_XRAY_DAEMON_ADDRESS", "AWS_XRAY_TRACING_NAME", "AWS_XRAY_CONTEXT_MISSING",
              "AWS_XRAY_SDK_ENABLED", "AWS_XRAY_DEBUG_MODE", "AWS_XRAY_LOG_LEVEL"):
        monkeypatch.delenv(k, raising=False)


# ---- The Python SDK, and what it sends ----

class RecordingEmitter(UDPEmitter):
    """The SDK's own UDP emitter; each datagram is recorded as it goes out on a real socket."""

    def __init__(self, daemon_address):
        super().__init__(daemon_address)
        self.datagrams = []

    def _send_data(self, data):
        self.datagrams.append(data)
        super()._send_data(data)


def new_recorder(daemon_address, sampling=False):
    """A recorder of its own per test (no global state shared with other tests)."""
    emitter = RecordingEmitter(daemon_address)
    recorder = AWSXRayRecorder()
    recorder.configure(sampling=sampling, daemon_address=daemon_address, context_missing="LOG_ERROR",
                       service="py-checkout", emitter=emitter, plugins=())
    return recorder, emitter


def send_checkout(recorder, name="py-checkout"):
    """One segment: three levels of subsegments, annotations, non-ASCII metadata, an exception
    and an SQL call. Returns its trace ID."""
    segment = recorder.begin_segment(name)
    segment.put_annotation("tenant", "ünïcödé ✓ 日本")
    segment.put_annotation("attempt", 3)
    segment.put_annotation("vip", True)
    segment.put_metadata("note", "日本語 ünïcödé", "default")
    segment.put_metadata("order", {"items": ["café", "crème brûlée"], "total": 12.5}, "shop")
    with recorder.in_subsegment("validate") as validate:
        validate.put_annotation("rule", "größe")
        with recorder.in_subsegment("parse-items") as parse:
            parse.put_metadata("raw", "ünïcödé 日本語", "default")
            try:
                with recorder.in_subsegment("price-lookup"):
                    raise ValueError("no price for 'crème brûlée'")
            except ValueError:
                pass
    with recorder.in_subsegment("orders-db@localhost", namespace="remote") as db:
        db.set_sql({"url": "postgresql://localhost:5432/orders",
                    "sanitized_query": "SELECT * FROM orders WHERE id = %s",
                    "database_type": "PostgreSQL", "database_version": "16.2",
                    "user": "app", "driver_version": "psycopg-3.2"})
    recorder.end_segment()
    return segment.trace_id


def bodies(datagrams):
    """The documents of X-Ray daemon datagrams (header line checked)."""
    out = []
    for d in datagrams:
        header, body = d.split("\n", 1)
        assert header == HEADER
        out.append(body)
    return out


def flatten(doc, parent=None, segment=None):
    """(document, parent ID, enclosing segment) for a document and all its nested subsegments."""
    segment = segment or doc
    yield doc, doc.get("parent_id", parent), segment
    for sub in doc.get("subsegments", []):
        yield from flatten(sub, doc["id"], segment)


def complete(docs):
    return [t for d in docs for t in flatten(d)
            if "end_time" in t[0] and not t[0].get("in_progress")]


def stored_documents(moto_url, docs, region="us-east-1"):
    """Polls moto's BatchGetTraces until every sent document is stored; returns them by ID."""
    client = boto3.client("xray", region_name=region, endpoint_url=moto_url,
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    trace_ids = sorted({d["trace_id"] for d in docs})
    want = {d["id"] for d in docs}
    stored = {}

    def all_stored():
        for i in range(0, len(trace_ids), 5):
            for t in client.batch_get_traces(TraceIds=trace_ids[i:i + 5])["Traces"]:
                for s in t["Segments"]:
                    stored[s["Id"]] = s["Document"]
        return want <= set(stored)

    wait_until(all_stored, f"X-Ray to store {sorted(want - set(stored))}")
    return {k: v for k, v in stored.items() if k in want}


def assert_stored_as_sent(moto_url, sent, region="us-east-1"):
    docs = [json.loads(b) for b in sent]
    stored = stored_documents(moto_url, docs, region)
    for doc in docs:
        assert json.loads(stored[doc["id"]]) == doc


def families(agent):
    status, body = agent.get("/metrics")
    assert status == 200
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def sample(agent, family, **labels):
    f = families(agent)[family]
    values = [s.value for s in f.samples if all(s.labels.get(k) == v for k, v in labels.items())
              and not s.name.endswith(("_bucket", "_sum", "_created"))]
    assert len(values) == 1, (family, labels, f.samples)
    return values[0]


def status_class(doc):
    # span_view.rs: only `fault` makes the span an error (error/throttle stay the caller's).
    return "fault" if doc.get("fault") else "ok"


def kind(doc, is_segment):
    if is_segment:
        return "server"
    return "client" if doc.get("namespace") in ("aws", "remote") else "internal"


# ---- a. documents reach X-Ray unchanged ----

def test_python_sdk_documents_reach_xray_as_sent(xray_agent, moto_url):
    recorder, emitter = new_recorder(xray_agent.xray_udp)
    send_checkout(recorder)
    sent = bodies(emitter.datagrams)
    assert len(sent) == 1
    doc = json.loads(sent[0])
    # What the SDK wrote is what this test means to check: the features are all in it.
    names = {d["name"]: d for d, _, _ in flatten(doc)}
    assert set(names) == {"py-checkout", "validate", "parse-items", "price-lookup", "orders-db@localhost"}
    assert names["parse-items"]["subsegments"][0]["name"] == "price-lookup"
    assert names["price-lookup"]["cause"]["exceptions"][0]["message"] == "no price for 'crème brûlée'"
    assert names["orders-db@localhost"]["sql"]["database_type"] == "PostgreSQL"
    assert doc["annotations"] == {"tenant": "ünïcödé ✓ 日本", "attempt": 3, "vip": True}
    assert doc["metadata"]["default"]["note"] == "日本語 ünïcödé"
    # Past its streaming threshold the SDK sends closed subsegments as documents of their own.
    recorder.configure(streaming_threshold=1)
    send_checkout(recorder, "py-streamed")
    streamed = bodies(emitter.datagrams)[1:]
    kinds = [json.loads(b).get("type") for b in streamed]
    assert kinds.count("subsegment") >= 2 and kinds.count(None) == 1, kinds
    assert_stored_as_sent(moto_url, sent + streamed)


# ---- b. span metrics count them ----

def test_python_sdk_segments_are_counted_by_span_metrics(xray_agent, moto_url):
    recorder, emitter = new_recorder(xray_agent.xray_udp)
    for _ in range(3):
        send_checkout(recorder, "py-metrics ünï")
    docs = [json.loads(b) for b in bodies(emitter.datagrams)]
    spans = complete(docs)
    assert len(spans) == 15
    stored_documents(moto_url, docs)  # every document handled by the agent
    accepted = 'sidetrace_receiver_spans_accepted'
    assert sample(xray_agent, accepted, protocol="xray_udp") == len(spans)
    assert sample(xray_agent, "sidetrace_xray_udp_segments_accepted") == len(docs)

    expected = {}
    for d, _, seg in spans:
        key = (seg["name"], d["name"], kind(d, d is seg), status_class(d))
        expected[key] = expected.get(key, 0) + 1
    hist = families(xray_agent)["sidetrace_span_duration_seconds"]
    counts = {(s.labels["service"], s.labels["operation"], s.labels["kind"], s.labels["status"]): s.value
              for s in hist.samples if s.name.endswith("_count") and s.labels["service"] == "py-metrics ünï"}
    assert counts == expected
    assert expected[("py-metrics ünï", "py-metrics ünï", "server", "ok")] == 3
    assert expected[("py-metrics ünï", "price-lookup", "internal", "fault")] == 3
    assert expected[("py-metrics ünï", "orders-db@localhost", "client", "ok")] == 3


def test_streamed_subsegments_count_under_their_service(agent):
    """Independent subsegments carry no service name; the agent names them after the segment
    their sender (one socket per SDK process) last sent, so span metrics do not split."""
    recorder, emitter = new_recorder(agent.xray_udp)
    send_checkout(recorder, "py-streaming")
    recorder.configure(streaming_threshold=1)
    send_checkout(recorder, "py-streaming")
    docs = [json.loads(b) for b in bodies(emitter.datagrams)]
    assert sum(1 for d in docs if d.get("type") == "subsegment") >= 2
    spans = complete(docs)
    deadline = time.time() + 20
    while sample(agent, "sidetrace_receiver_spans_accepted", protocol="xray_udp") < len(spans):
        assert time.time() < deadline, "span views never all arrived"
        time.sleep(0.05)
    hist = families(agent)["sidetrace_span_duration_seconds"]
    services = {s.labels["service"]: 0 for s in hist.samples if s.name.endswith("_count")}
    for s in hist.samples:
        if s.name.endswith("_count"):
            services[s.labels["service"]] += s.value
    assert services == {"py-streaming": len(spans)}, services


# ---- c. the local store ----

def nanos(secs):
    # span_view.rs unix_nanos: whole seconds, then the fraction rounded to the microsecond, half
    # away from zero as Rust's f64::round (Python's round() rounds half to even).
    whole = int(secs)
    return whole * 1_000_000_000 + math.floor((secs - whole) * 1e6 + 0.5) * 1000


def within_a_microsecond(got_nanos, secs):
    return abs(got_nanos - nanos(secs)) <= 1000


def expected_span(d, parent, seg):
    attrs = {}
    for k, v in (d.get("annotations") or {}).items():
        attrs[k] = v
    if d.get("annotations"):
        attrs["aws.xray.annotations"] = sorted(d["annotations"])
    for ns, v in (d.get("metadata") or {}).items():
        attrs[f"aws.xray.metadata.{ns}"] = v
    sql = d.get("sql") or {}
    for field, key in [("url", "db.connection_string"), ("sanitized_query", "db.statement"),
                       ("database_type", "db.system"), ("user", "db.user")]:
        if field in sql:
            attrs[key] = sql[field]
    events = []
    for e in (d.get("cause") or {}).get("exceptions", []):
        stack = "\n".join(f"at {f['label']} ({f['path']}:{f['line']})" for f in e["stack"])
        events.append({"name": "exception", "time_unix_nano": nanos(d["end_time"]),
                       "attributes": {"exception.type": e["type"], "exception.message": e["message"],
                                      "exception.stacktrace": stack}})
    fault = d.get("fault", False)
    return {
        "trace_id": seg["trace_id"][2:].replace("-", ""),
        "span_id": d["id"],
        "parent_span_id": parent,
        "name": d["name"],
        "kind": kind(d, d is seg),
        "service": seg["name"],
        "start_time_unix_nano": nanos(d["start_time"]),
        "end_time_unix_nano": nanos(d["end_time"]),
        "status": {"code": "error" if fault else "unset",
                   "message": d["cause"]["exceptions"][0]["message"] if fault else ""},
        "attributes": attrs,
        "events": events,
        "resource": {"service.name": seg["name"], "telemetry.sdk.name": seg["aws"]["xray"]["sdk"],
                     "telemetry.sdk.version": seg["aws"]["xray"]["sdk_version"]},
    }


def test_python_sdk_segments_in_the_local_store(agent):
    recorder, emitter = new_recorder(agent.xray_udp)
    send_checkout(recorder, "py-local")
    [doc] = [json.loads(b) for b in bodies(emitter.datagrams)]
    hex_id = doc["trace_id"][2:].replace("-", "")

    def listed():
        _, body = agent.get("/api/traces?service=py-local")
        return [t for t in json.loads(body)["traces"] if t["trace_id"] == hex_id]

    [summary] = wait_until(listed, "the trace in /api/traces")
    spans = complete([doc])
    assert summary["service"] == "py-local" and summary["root_name"] == "py-local"
    assert summary["span_count"] == len(spans) == 5
    assert summary["error"] is True
    assert within_a_microsecond(summary["start_unix_nano"], doc["start_time"])
    assert within_a_microsecond(summary["start_unix_nano"] + summary["duration_nanos"], doc["end_time"])

    status, body = agent.get(f"/api/traces/{hex_id}")
    assert status == 200
    got = json.loads(body)
    assert got["trace_id"] == hex_id
    by_id = {s["span_id"]: s for s in got["spans"]}
    assert set(by_id) == {d["id"] for d, _, _ in spans}
    for d, parent, seg in spans:
        s = dict(by_id[d["id"]])
        want = expected_span(d, parent, seg)
        attrs = dict(s["attributes"])
        for k in list(attrs):
            if k.startswith("aws.xray.metadata."):
                attrs[k] = json.loads(attrs[k])
        if "aws.xray.annotations" in attrs:
            attrs["aws.xray.annotations"] = sorted(attrs["aws.xray.annotations"])
        s["attributes"] = attrs
        # Times to the microsecond are test_span_view_times_are_the_documents_to_the_microsecond's.
        for k in ("start_time_unix_nano", "end_time_unix_nano"):
            assert within_a_microsecond(s[k], d[k.split("_unix")[0]]), (d["name"], k)
            want[k] = s[k]
        for e in s["events"]:
            assert within_a_microsecond(e["time_unix_nano"], d["end_time"])
        for e in want["events"]:
            e["time_unix_nano"] = s["end_time_unix_nano"]
        assert {k: s[k] for k in want} == want, d["name"]


def test_span_view_times_are_the_documents_to_the_microsecond(agent):
    """The span view keeps the SDK's timestamps to the microsecond, rounded half away from zero.
    A JSON parser that is not correctly rounded (serde_json without its float_roundtrip feature)
    reads these two doubles one ULP (0.24 µs) off, which moves the rounded microsecond by one."""
    recorder, emitter = new_recorder(agent.xray_udp)
    start, end = 1796300493.5891755, 1796300493.6997855  # exact: …5891754627…, …6997854709…
    segment = recorder.begin_segment("py-clock")
    segment.start_time = start
    recorder.end_segment(end_time=end)
    [doc] = [json.loads(b) for b in bodies(emitter.datagrams)]
    assert (doc["start_time"], doc["end_time"]) == (start, end)
    hex_id = doc["trace_id"][2:].replace("-", "")

    def stored():
        try:
            return json.loads(agent.get(f"/api/traces/{hex_id}")[1])["spans"]
        except urllib.error.HTTPError as e:
            assert e.code == 404
            return None

    [span] = wait_until(stored, "the trace in the local store")
    assert (span["start_time_unix_nano"], span["end_time_unix_nano"]) == \
        (1796300493589175000, 1796300493699785000) == (nanos(start), nanos(end))


# ---- d. centralised sampling through the proxy, against a fake X-Ray ----

def sampling_rules_answer():
    def rule(name, priority, rate, service):
        return {"SamplingRule": {
            "RuleName": name, "RuleARN": f"arn:aws:xray:{REGION}:123456789012:sampling-rule/{name}",
            "ResourceARN": "*", "Priority": priority, "FixedRate": rate, "ReservoirSize": 0,
            "ServiceName": service, "ServiceType": "*", "Host": "*", "HTTPMethod": "*",
            "URLPath": "*", "Version": 1, "Attributes": {}},
            "CreatedAt": 1.7e9, "ModifiedAt": 1.7e9}
    return {"SamplingRuleRecords": [rule("never-sampled", 1, 0.0, "never-sampled"),
                                    rule("Default", 10000, 1.0, "*")]}


RATES = {"never-sampled": 0.0, "Default": 1.0}


class SamplingXray(FakeXray):
    """X-Ray's sampling API on loopback (moto has none), checking each call's SigV4 signature;
    every other request is forwarded to moto unchanged."""

    def __init__(self, moto_url):
        self.moto_url = moto_url
        super().__init__()

    def respond(self, call):
        if call.path in ("/GetSamplingRules", "/SamplingTargets") and call.method == "POST":
            if call.problem:
                return 403, {}, json.dumps({"__type": "InvalidSignatureException",
                                            "message": call.problem}).encode()
            return 200, {}, json.dumps(self.sampling(call.path, call.body)).encode()
        return self.forward(call)

    def forward(self, call):
        fwd = {k: v for k, v in call.headers.items() if k not in ("host", "content-length", "connection")}
        req = urllib.request.Request(self.moto_url + call.path, data=call.body or None,
                                     headers=fwd, method=call.method)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status, ctype, data = r.status, r.headers.get("content-type"), r.read()
        except urllib.error.HTTPError as e:
            status, ctype, data = e.code, e.headers.get("content-type"), e.read()
        return status, {"content-type": ctype or "application/json"}, data

    def sampling(self, path, body):
        if path == "/GetSamplingRules":
            return sampling_rules_answer()
        docs = json.loads(body)["SamplingStatisticsDocuments"]
        return {"SamplingTargetDocuments": [
            {"RuleName": d["RuleName"], "FixedRate": RATES[d["RuleName"]], "ReservoirQuota": 0,
             "ReservoirQuotaTTL": time.time() + 60, "Interval": 10} for d in docs],
            "LastRuleModification": 1.7e9, "UnprocessedStatistics": []}


@pytest.fixture
def sampling_xray(moto_url):
    """A fake X-Ray (sampling API; the rest forwarded to moto) and an agent in AWS mode using it."""
    fake = SamplingXray(moto_url)
    agent = start_agent(["--sampling-ratio", "1", "--set", "xray.idle_flush=200ms"], {
        "AWS_REGION": REGION, "AWS_ENDPOINT_URL": fake.url, "AWS_ACCESS_KEY_ID": KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN,
    })
    yield fake, agent
    agent.proc.terminate()
    assert agent.proc.wait(timeout=30) == 0
    fake.close()


def assert_signed(fake):
    """Every request the agent made to the fake X-Ray was signed as botocore signs."""
    with fake.lock:
        problems = [(m, p, problem) for m, p, _, _, problem in fake.requests if problem]
    assert not problems


def post(addr, path, body, method="POST"):
    conn = http.client.HTTPConnection(addr, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"content-type": "application/json"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_python_sdk_centralised_sampling_through_the_proxy(sampling_xray, moto_url):
    fake, agent = sampling_xray
    recorder, emitter = new_recorder(f"tcp:{agent.xray_proxy} udp:{agent.xray_udp}", sampling=True)
    sampler = recorder.sampler
    sdk_calls = []  # (path, body) of each sampling call the SDK's botocore client sent
    sampler._connector._xray_client.meta.events.register(
        "before-send.xray", lambda request, **_: sdk_calls.append(
            (urllib.parse.urlsplit(request.url).path, bytes(request.body or b""))))
    # The target poller reports every 10 s (+ jitter); the rule poller fetches at once on start.
    targets = sampler._target_poller
    targets._interval, targets._get_jitter = 0.3, lambda: 0
    try:
        sampler.start()
        wait_until(lambda: len(sampler._cache.rules) == 2, "the SDK to load the sampling rules")
        assert [(r.name, r.rate) for r in sampler._cache.rules] == [("never-sampled", 0.0), ("Default", 1.0)]

        n = 20
        decisions = {"never-sampled": [], "py-checkout": []}
        for _ in range(n):
            for name, seen in decisions.items():
                seen.append(recorder.begin_segment(name).sampled)
                recorder.end_segment()
        assert decisions == {"never-sampled": [False] * n, "py-checkout": [True] * n}

        def reported():
            stats = {}
            for _, _, _, body, _ in fake.calls("/SamplingTargets"):
                for d in json.loads(body)["SamplingStatisticsDocuments"]:
                    s = stats.setdefault(d["RuleName"], [0, 0, 0])
                    s[0] += d["RequestCount"]; s[1] += d["SampledCount"]; s[2] += d["BorrowCount"]
            return stats if stats.get("never-sampled", [0])[0] == n and stats.get("Default", [0])[0] == n else None

        stats = wait_until(reported, "the SDK's statistics in SamplingTargets")
        assert stats == {"never-sampled": [n, 0, 0], "Default": [n, n, 0]}
        wait_until(lambda: len([c for c in sdk_calls if c[0] == "/SamplingTargets"])
                   == len(fake.calls("/SamplingTargets")), "the SDK's calls to settle")

        # The proxy's GetSamplingRules answer is reused (same body, within 10 s).
        [(_, rules_body)] = [c for c in sdk_calls if c[0] == "/GetSamplingRules"]
        status, answer = post(agent.xray_proxy, "/GetSamplingRules", rules_body)
        assert status == 200 and json.loads(answer) == sampling_rules_answer()
    finally:
        # The SDK's poller threads cannot be stopped: make them never call again.
        targets._interval = 3600
        sampler._rule_poller._time_to_wait = math.inf

    # Through the proxy: the fake X-Ray saw each SDK call once, signed, bodies unchanged.
    assert [b for _, _, _, b, _ in fake.calls("/GetSamplingRules")] == [rules_body]
    assert [b for p, b in sdk_calls if p == "/SamplingTargets"] == \
        [b for _, _, _, b, _ in fake.calls("/SamplingTargets")]
    assert all(h["content-type"] == "application/json"
               for _, _, h, _, _ in fake.calls("/GetSamplingRules") + fake.calls("/SamplingTargets"))
    assert_signed(fake)
    calls = "sidetrace_xray_proxy_requests"
    assert sample(agent, calls, call="GetSamplingRules", outcome="forwarded") == 1
    assert sample(agent, calls, call="GetSamplingRules", outcome="cached") == 1
    # The fake records a call before it answers, and the proxy counts it once the answer is back.
    wait_until(lambda: sample(agent, calls, call="SamplingTargets", outcome="forwarded")
               == len(fake.calls("/SamplingTargets")), "the proxy to count the forwarded SamplingTargets")
    assert sample(agent, calls, call="SamplingTargets", outcome="cached") == 0

    # The sampled segments went to X-Ray (PutTraceSegments through the fake X-Ray to moto).
    sent = bodies(emitter.datagrams)
    assert len(sent) == n
    assert all(json.loads(b)["name"] == "py-checkout" and json.loads(b)["aws"]["xray"]["sampling_rule_name"] == "Default"
               for b in sent)
    assert_stored_as_sent(moto_url, sent, REGION)
    assert_signed(fake)


def test_proxy_serves_only_the_two_sampling_calls(sampling_xray):
    fake, agent = sampling_xray
    assert post(agent.xray_proxy, "/TraceSegments", b'{"TraceSegmentDocuments": []}')[0] == 404
    assert post(agent.xray_proxy, "/GetSamplingRules", None, method="GET")[0] == 404
    big = json.dumps({"SamplingStatisticsDocuments": [], "pad": "x" * 70_000}).encode()
    assert len(big) > 70_000
    assert post(agent.xray_proxy, "/SamplingTargets", big)[0] == 413
    assert sample(agent, "sidetrace_xray_proxy_refused", reason="not_found") == 2
    assert sample(agent, "sidetrace_xray_proxy_refused", reason="too_large") == 1
    assert fake.calls("/TraceSegments") == [] and fake.calls("/GetSamplingRules") == [] \
        and fake.calls("/SamplingTargets") == []


# ---- e. local mode: the proxy samples everything ----

def test_local_proxy_answers_a_sample_everything_rule(agent):
    status, body = post(agent.xray_proxy, "/GetSamplingRules", b"{}")
    assert status == 200
    [record] = json.loads(body)["SamplingRuleRecords"]
    assert record["SamplingRule"]["RuleName"] == "Default"
    assert record["SamplingRule"]["FixedRate"] == 1.0
    # The SDK's own client reads it as a valid rule.
    recorder, _ = new_recorder(agent.xray_udp, sampling=True)
    [rule] = recorder.sampler._connector.fetch_sampling_rules()
    assert (rule.name, rule.rate, rule.is_default()) == ("Default", 1.0, True)
    assert sample(agent, "sidetrace_xray_proxy_requests", call="GetSamplingRules", outcome="local") == 2


# ---- The Node.js SDK ----

def run_node(*args):
    script = os.path.join(NODE_DIR, "send_segment.js")
    assert shutil.which("node"), "node is not installed: run ./scripts/test (it installs nodejs)"
    assert os.path.isdir(os.path.join(NODE_DIR, "node_modules", "aws-xray-sdk-core")), \
        "tests/node/node_modules is missing: run ./scripts/test (it runs npm ci in tests/node)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    p = subprocess.run(["node", script, *args], cwd=NODE_DIR, env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_node_sdk_documents_reach_xray_as_sent(xray_agent, moto_url):
    out = run_node("send", xray_agent.xray_udp)
    sent = bodies(out["datagrams"])
    assert len(sent) == 1
    doc = json.loads(sent[0])
    names = {d["name"]: d for d, _, _ in flatten(doc)}
    assert set(names) == {"node-checkout", "validate", "parse-items", "price-lookup", "orders-db@localhost"}
    assert names["parse-items"]["subsegments"][0]["name"] == "price-lookup"
    assert names["price-lookup"]["fault"] is True
    assert names["price-lookup"]["cause"]["exceptions"][0]["type"] == "RangeError"
    assert names["orders-db@localhost"]["namespace"] == "remote"
    assert names["orders-db@localhost"]["sql"]["sanitized_query"] == "SELECT * FROM orders WHERE id = $1"
    assert doc["metadata"]["default"]["note"] == "日本語 ünïcödé"
    assert "日本語".encode() in out["datagrams"][0].encode(), "sent as UTF-8, not escaped"
    assert_stored_as_sent(moto_url, sent)
    assert sample(xray_agent, "sidetrace_receiver_spans_accepted", protocol="xray_udp") == 5


def test_node_sdk_centralised_sampling_through_the_proxy(sampling_xray, moto_url):
    fake, agent = sampling_xray
    n = 20
    out = run_node("sampling", agent.xray_udp, agent.xray_proxy, str(n))
    assert out["rules"][0] == {"name": "never-sampled", "rate": 0.0}
    assert out["rules"][1]["name"] == "Default"
    assert out["decisions"] == {"never-sampled": [False] * n, "node-checkout": ["Default"] * n}

    node_rules = [c for c in out["calls"] if c["path"] == "/GetSamplingRules"]
    node_targets = [c for c in out["calls"] if c["path"] == "/SamplingTargets"]
    assert node_rules and node_targets
    assert all(c["status"] == 200 for c in out["calls"]), out["calls"]
    # The SDK's statistics reached the fake X-Ray byte for byte.
    fake_targets = [b.decode() for _, _, _, b, _ in fake.calls("/SamplingTargets")]
    assert [c["body"] for c in node_targets] == fake_targets
    stats = [d for c in node_targets for d in json.loads(c["body"])["SamplingStatisticsDocuments"]]
    assert sum(d["RequestCount"] for d in stats if d["RuleName"] == "never-sampled") == n
    assert sum(d["SampledCount"] for d in stats if d["RuleName"] == "never-sampled") == 0
    # Rule polls past the first within 10 s are answered from the proxy's cache.
    fake_rules = fake.calls("/GetSamplingRules")
    assert all(b.decode() == "{}" for _, _, _, b, _ in fake_rules)
    calls = "sidetrace_xray_proxy_requests"
    forwarded = sample(agent, calls, call="GetSamplingRules", outcome="forwarded")
    cached = sample(agent, calls, call="GetSamplingRules", outcome="cached")
    assert forwarded == len(fake_rules) >= 1
    assert forwarded + cached == len(node_rules)
    assert sample(agent, calls, call="SamplingTargets", outcome="forwarded") == len(fake_targets)
    assert_signed(fake)

    sent = bodies(out["datagrams"])
    assert len(sent) == n and all(json.loads(b)["name"] == "node-checkout" for b in sent)
    assert_stored_as_sent(moto_url, sent, REGION)
