"""The agent's own PutTraceSegments request, checked against botocore (what aws-sdk-xray used
to guarantee): serialised as botocore's rest-json serializer serialises the same call, signed
as botocore's SigV4Auth signs it, and X-Ray's answers classified as the agent's counters show.
A loopback fake X-Ray records each call and answers from a queue of canned answers."""
import functools
import json
import os
import socket
import time

import botocore.serialize
import botocore.session
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from conftest import start_agent
from xray_fake import KEY, SECRET, TOKEN, FakeXray, verify_sigv4, wait_until

REGION = "us-east-1"
PATH = "/TraceSegments"
HEADER = '{"format": "json", "version": 1}'
OK = (200, {}, b'{"UnprocessedTraceSegments":[]}')
# Quotes, backslashes, newlines, tabs, a control character, DEL, U+2028, non-ASCII and an emoji.
TRICKY = 'q"uote \\ back\\slash \n new\tline \r \x01 \x7f \u2028 ünïcödé 日本語 😀 </script>'


class CannedXray(FakeXray):
    """Answers each PutTraceSegments call with the next canned answer, then with `OK`. An answer
    is (status, headers, body), or a function of the call returning one."""

    def __init__(self, token):
        super().__init__(functools.partial(verify_sigv4, region=REGION, token=token, service="xray"))
        self.token = token
        self.answers = []

    def respond(self, call):
        if (call.method, call.path) != ("POST", PATH):
            return super().respond(call)
        with self.lock:
            answer = self.answers.pop(0) if self.answers else OK
        return answer(call) if callable(answer) else answer

    def puts(self):
        return self.calls(PATH)


@pytest.fixture
def wire():
    """Starts a fake X-Ray and an agent in AWS mode sending to it (a session token if asked)."""
    started = []

    def start(token=None):
        fake = CannedXray(token)
        env = {"AWS_REGION": REGION, "AWS_ENDPOINT_URL": fake.url,
               "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "RUST_LOG": "info,sidetrace=debug"}
        if token:
            env["AWS_SESSION_TOKEN"] = token
        agent = start_agent(["--exporters", "xray", "--sampling-ratio", "1",
                             "--set", "xray.idle_flush=100ms"], env)
        started.append((fake, agent))
        return fake, agent

    yield start
    for fake, agent in started:
        agent.proc.terminate()
        assert agent.proc.wait(timeout=30) == 0
        fake.close()


# ---- helpers ----

@functools.lru_cache(maxsize=None)
def put_trace_segments():
    model = botocore.session.get_session().get_service_model("xray")
    return model, model.operation_model("PutTraceSegments")


def botocore_request(docs):
    """The request botocore's own serializer makes for PutTraceSegments with these documents."""
    model, op = put_trace_segments()
    return botocore.serialize.create_serializer(model.metadata["protocol"]).serialize_to_request(
        {"TraceSegmentDocuments": docs}, op)


def assert_serialised_as_botocore(call):
    """One call of ours against botocore's request for the documents it carried; returns them."""
    ours = json.loads(call.body.decode("utf-8"), strict=True)
    assert isinstance(ours, dict) and list(ours) == ["TraceSegmentDocuments"], ours
    docs = ours["TraceSegmentDocuments"]
    assert isinstance(docs, list) and docs and all(isinstance(d, str) for d in docs), docs
    theirs = botocore_request(docs)
    assert call.method == theirs["method"]
    path, _, query = call.path.partition("?")
    assert path == theirs["url_path"]
    assert query == "" and theirs["query_string"] == {}
    assert json.loads(call.body, strict=True) == json.loads(theirs["body"], strict=True)
    for name, value in theirs["headers"].items():
        assert call.headers.get(name.lower()) == value, (name, call.headers)
    return docs


def assert_signed_as_botocore(fake, calls):
    """Every call verifies with botocore's signer, and the same check refuses the call with a
    wrong secret, a changed body or a wrong session token (so it can fail)."""
    assert calls
    for c in calls:
        url = f"http://{c.headers['host']}{c.path}"
        check = functools.partial(verify_sigv4, c.method, url, c.headers, region=REGION, service="xray")
        assert c.problem is None, c.problem
        assert check(c.body, token=fake.token) is None
        assert check(c.body, token=fake.token, secret=SECRET + "x").startswith("signature ")
        assert check(c.body + b" ", token=fake.token).startswith("signature ")
        signed = c.headers["authorization"].split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")
        assert "content-type" in signed, signed
        if fake.token:
            assert "x-amz-security-token" in signed and c.headers["x-amz-security-token"] == fake.token
            assert check(c.body, token=fake.token + "x") == "no session token"
            assert check(c.body, token=None) is not None
        else:
            assert "x-amz-security-token" not in c.headers
            assert check(c.body, token=TOKEN) is not None


def metrics(agent):
    """(sample name, labels) -> value for every sample on /metrics."""
    status, body = agent.get("/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(body.decode()) for s in f.samples}


def counter(agent, name, **labels):
    """The sum of `name`'s samples with these labels (0 when there is none)."""
    return sum(v for (n, ls), v in metrics(agent).items()
               if n == name and all(dict(ls).get(k) == want for k, want in labels.items()))


SENT = "sidetrace_exporter_sent_spans_total"
DROPPED = "sidetrace_exporter_dropped_spans_total"
REJECTED = "sidetrace_exporter_rejected_spans_total"
PENDING = "sidetrace_exporter_pending_spans"


def outcome(agent):
    """The X-Ray exporter's accounting: sent, dropped by reason, rejected by code, pending."""
    m = metrics(agent)
    pick = lambda name, key: {dict(ls)[key]: v for (n, ls), v in m.items()
                              if n == name and dict(ls).get("exporter") == "xray" and v}
    return {"sent": m.get((SENT, (("exporter", "xray"),)), 0), "dropped": pick(DROPPED, "reason"),
            "rejected": pick(REJECTED, "code"), "pending": m.get((PENDING, (("exporter", "xray"),)), 0)}


def find_strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from find_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from find_strings(v)


_ids = iter(range(1, 1 << 40))


def new_ids():
    now = int(time.time())
    n = next(_ids) + (os.getpid() << 24)
    return f"1-{now:08x}-{n:024x}", f"{n & ((1 << 64) - 1):016x}"


def relayed_documents():
    """Segment documents as an SDK might write them, each holding the awkward cases in its own
    way: escapes in strings, raw UTF-8, \\u escapes, pretty-printed with newlines, tabs and CRs
    between tokens, an independent subsegment."""
    t = time.time()
    trace, a = new_ids()
    _, b = new_ids()
    _, c = new_ids()
    trace2, d = new_ids()
    _, e = new_ids()
    compact = ('{"name":"wire-ünï","id":"%s","trace_id":"%s","start_time":%.6f,"end_time":%.6f,'
               '"annotations":{"tenant":"ünïcödé ✓ 日本"},'
               '"metadata":{"default":{"note":"q\\"uote \\\\ back\\\\slash \\n nl \\t tab \\r cr \\b\\f'
               ' \\u0001 \\u00e9 \\ud83d\\ude00 \\u2028 \\/ raw: 日本語 😀 \x7f </script>"}}}'
               % (a, trace, t, t + 0.01))
    pretty = json.dumps({"name": "wire-pretty", "id": b, "trace_id": trace, "start_time": t,
                         "end_time": t + 0.02, "metadata": {"default": {"tricky": TRICKY}},
                         "subsegments": [{"name": 'sub "quoted" \\', "id": c, "start_time": t,
                                          "end_time": t + 0.01}]},
                        indent=2, ensure_ascii=False)
    ascii_escaped = json.dumps({"name": "wire-ascii", "id": d, "trace_id": trace2, "start_time": t,
                                "end_time": t + 0.03, "user": TRICKY}, ensure_ascii=True)
    ascii_escaped = ascii_escaped.replace(", ", ",\r\n\t", 3)
    subsegment = json.dumps({"type": "subsegment", "name": "wire-streamed ✓", "id": e,
                             "trace_id": trace2, "parent_id": d, "start_time": t, "end_time": t + 0.01,
                             "metadata": {"default": {"k\\ey \"q\"": ["\n", "日本", 1.5, None]}}},
                            ensure_ascii=False, separators=(",", ":"))
    return [compact, pretty, ascii_escaped, subsegment]


def send_udp(agent, docs):
    host, port = agent.xray_udp.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for d in docs:
            s.sendto(f"{HEADER}\n{d}".encode("utf-8"), (host, int(port)))


def doc_ids(docs):
    return [json.loads(d)["id"] for d in docs]


def received(fake):
    """Every document the fake received, in arrival order (retries included)."""
    return [d for c in fake.puts() for d in json.loads(c.body)["TraceSegmentDocuments"]]


# ---- 1 and 2: serialisation and signature ----

@pytest.mark.parametrize("token", [None, TOKEN], ids=["no_session_token", "session_token"])
def test_otlp_spans_are_put_as_botocore_serialises_and_signs(wire, token):
    fake, agent = wire(token)
    provider = TracerProvider(resource=Resource.create({"service.name": "py-wïre"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"http://{agent.http}/v1/traces")))
    tracer = provider.get_tracer("py-wire")
    with tracer.start_as_current_span('GET /ünï "q" \\', kind=SpanKind.SERVER) as root:
        root.set_attribute("tricky", TRICKY)
        root.set_attribute("http.request.method", "GET")
        with tracer.start_as_current_span("child\nspan ✓", kind=SpanKind.INTERNAL) as child:
            child.set_attribute("list", ["a\"b", "c\\d", "日本"])
            child.add_event("ev \"1\"", {"detail": TRICKY})
    provider.shutdown()
    span_ids = {format(s.get_span_context().span_id, "016x") for s in (root, child)}

    docs = wait_until(lambda: (lambda d: d if span_ids <= {json.loads(x)["id"] for x in d} else None)(received(fake)),
                      "both spans at the fake X-Ray")
    calls = fake.puts()
    for c in calls:
        for d in assert_serialised_as_botocore(c):
            json.loads(d, strict=True)  # each document is itself strict JSON
    assert len(docs) == 2, docs
    # The awkward string went through the agent's escaping intact (in some field of a document).
    assert any(TRICKY in find_strings(json.loads(d)) for d in docs), docs
    assert_signed_as_botocore(fake, calls)
    wait_until(lambda: outcome(agent)["sent"] == 2, "the spans counted as sent")
    assert outcome(agent) == {"sent": 2, "dropped": {}, "rejected": {}, "pending": 0}


def test_relayed_documents_are_put_byte_for_byte_as_botocore_serialises_and_signs(wire):
    fake, agent = wire(TOKEN)
    sent = relayed_documents()
    for d in sent:  # what this test means to check is in what it sends
        json.loads(d, strict=True)
    assert "\n" in sent[1] and "\r\n\t" in sent[2] and "\\u00e9" in sent[0] and "日本語" in sent[0]
    send_udp(agent, sent)
    wait_until(lambda: len(received(fake)) >= len(sent), "the relayed documents at the fake X-Ray")
    calls = fake.puts()
    got = [d for c in calls for d in assert_serialised_as_botocore(c)]
    assert sorted(got) == sorted(sent)  # every document string exactly as the SDK sent it
    by_id = dict(zip(doc_ids(got), got))
    for d in sent:
        assert by_id[json.loads(d)["id"]].encode("utf-8") == d.encode("utf-8")
    assert_signed_as_botocore(fake, calls)
    wait_until(lambda: outcome(agent)["sent"] == len(sent), "the documents counted as sent")
    assert outcome(agent) == {"sent": len(sent), "dropped": {}, "rejected": {}, "pending": 0}


# ---- 3: X-Ray's answers, classified ----

RETRYABLE = {
    "429_throttling_header": ((429, {"x-amzn-ErrorType": "ThrottlingException:"},
                               b'{"message":"Rate exceeded"}'), "throttled"),
    "400_throttled_code_header": ((400, {"x-amzn-ErrorType": "ThrottledException:http://internal.amazon.com/"},
                                   b'{"message":"slow down"}'), "throttled"),
    "400_throttling_body_type": ((400, {}, b'{"__type":"com.amazonaws.xray#ThrottlingException","message":"x"}'),
                                 "throttled"),
    "500": ((500, {}, b'{"__type":"InternalFailure","message":"oops"}'), "server_error"),
    "503_html": ((503, {"content-type": "text/html"}, b"<html>unavailable</html>"), "server_error"),
    "408": ((408, {}, b""), "server_error"),
}


@pytest.mark.parametrize("answer,reason", RETRYABLE.values(), ids=RETRYABLE.keys())
def test_a_retryable_answer_is_retried_and_the_batch_sent_once(wire, answer, reason):
    fake, agent = wire()
    fake.answers.append(answer)
    docs = relayed_documents()
    send_udp(agent, docs)
    wait_until(lambda: outcome(agent)["sent"] == len(docs), "the retried batch counted as sent")
    calls = fake.puts()
    assert len(calls) == 2, [c.body for c in calls]
    assert calls[0].body == calls[1].body  # the same request, sent again
    assert sorted(json.loads(calls[1].body)["TraceSegmentDocuments"]) == sorted(docs)
    assert all(c.problem is None for c in calls)
    assert calls[0].headers["x-amz-date"] <= calls[1].headers["x-amz-date"]
    assert outcome(agent) == {"sent": len(docs), "dropped": {}, "rejected": {}, "pending": 0}
    # The retry was classified as the answer says: counted by reason, and logged at debug level.
    m = metrics(agent)
    retries = {dict(ls)["reason"]: v for (n, ls), v in m.items()
               if n == "sidetrace_exporter_retries_total" and dict(ls).get("exporter") == "xray" and v}
    assert retries == {reason: 1}, retries
    assert agent.logged("Export failed; retrying.", "exporter=\"xray\"", f"reason=\"{reason}\""), agent.log[-20:]


def test_a_permanent_error_is_dropped_not_retried(wire):
    fake, agent = wire()
    fake.answers.append((400, {}, b'{"__type":"com.amazonaws.xray#InvalidRequestException","message":"bad"}'))
    docs = relayed_documents()
    send_udp(agent, docs)
    # retry.rs deliver: ExportError::Permanent -> DropReason::PermanentError, counted by
    # Sender::send as dropped{reason="permanent_error"} (the code is only logged).
    wait_until(lambda: outcome(agent)["dropped"], "the batch counted as dropped")
    assert outcome(agent) == {"sent": 0, "dropped": {"permanent_error": len(docs)}, "rejected": {}, "pending": 0}
    assert len(fake.puts()) == 1
    assert agent.logged("Destination refused the request; dropping it.", "code=InvalidRequestException"), agent.log[-20:]
    assert not agent.logged("Export failed; retrying.")
    assert counter(agent, "sidetrace_exporter_retries_total", exporter="xray") == 0


def test_unprocessed_segments_are_rejected_by_their_error_code(wire):
    fake, agent = wire()
    docs = relayed_documents()
    refused = json.loads(docs[1])["id"]
    fake.answers.append((200, {}, json.dumps({"UnprocessedTraceSegments": [
        {"Id": refused, "ErrorCode": "InvalidTraceId", "Message": "x"},
        {"Id": "0123456789abcdef", "ErrorCode": "NotOurs", "Message": "not in the batch"},
    ]}).encode()))
    send_udp(agent, docs)
    wait_until(lambda: outcome(agent)["sent"], "the batch counted")
    assert outcome(agent) == {"sent": len(docs) - 1, "dropped": {}, "rejected": {"InvalidTraceId": 1}, "pending": 0}
    assert len(fake.puts()) == 1
    assert refused in doc_ids(json.loads(fake.puts()[0].body)["TraceSegmentDocuments"])
    assert counter(agent, REJECTED, exporter="xray", code="InvalidTraceId") == 1
