"""The otlp exporter over TLS, against servers that require a client certificate: Python's
grpcio (OTLP/gRPC) and Python's ssl module (OTLP/HTTP), with a CA and certificates made by
trustme. The server certificate names only "localhost", so a `dns+https:` backend (reached by
address) must still check it against the name."""
import os
import ssl
import subprocess
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest
import trustme
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conftest import BIN, start_agent


@pytest.fixture
def certs(tmp_path):
    ca = trustme.CA()
    server = ca.issue_cert("localhost")
    client = ca.issue_cert("sidecar.example")
    paths = {}
    for name, blob in [
        ("ca", ca.cert_pem.bytes()),
        ("server_chain", b"".join(p.bytes() for p in server.cert_chain_pems)),
        ("server_key", server.private_key_pem.bytes()),
        ("client_cert", b"".join(p.bytes() for p in client.cert_chain_pems)),
        ("client_key", client.private_key_pem.bytes()),
    ]:
        path = tmp_path / f"{name}.pem"
        path.write_bytes(blob)
        paths[name] = str(path)
    return paths


class Received:
    """Span IDs and names of every request a test server decoded, and the client certificates."""

    def __init__(self):
        self.spans = {}
        self.lock = threading.Lock()

    def add(self, body):
        req = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        with self.lock:
            for rs in req.resource_spans:
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self.spans[s.span_id.hex()] = s.name

    def wait_for(self, ids, seconds=20):
        deadline = time.time() + seconds
        while time.time() < deadline:
            with self.lock:
                if ids <= set(self.spans):
                    return True
            time.sleep(0.05)
        return False


def grpc_server(certs, received):
    class Service(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            received.add(request.SerializeToString())
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)
    creds = grpc.ssl_server_credentials(
        [(open(certs["server_key"], "rb").read(), open(certs["server_chain"], "rb").read())],
        root_certificates=open(certs["ca"], "rb").read(),
        require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    return server, port


def https_server(certs, received):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["content-length"]))
            if self.path != "/v1/traces":
                self.send_response(404)
                self.end_headers()
                return
            received.add(body)
            answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs["server_chain"], certs["server_key"])
    ctx.load_verify_locations(certs["ca"])
    ctx.verify_mode = ssl.CERT_REQUIRED
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def send_spans(agent, count=20):
    """Spans from the OpenTelemetry SDK to the sidecar; their span IDs."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "tls-check"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(SimpleSpanProcessor(
        OTLPSpanExporter(endpoint=f"http://{agent.grpc}", insecure=True)))
    tracer = provider.get_tracer("tls")
    for i in range(count):
        with tracer.start_as_current_span(f"op {i}"):
            pass
    provider.shutdown()
    return {format(s.context.span_id, "016x"): s.name for s in memory.get_finished_spans()}


def tls_env(certs):
    return {"OTEL_EXPORTER_OTLP_CERTIFICATE": certs["ca"],
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": certs["client_cert"],
            "OTEL_EXPORTER_OTLP_CLIENT_KEY": certs["client_key"]}


def stop(agent):
    agent.proc.terminate()
    assert agent.proc.wait(timeout=30) == 0


SIDECAR = ["--exporters", "otlp", "--sampling-ratio", "1", "--set", "sampling.keep_errors=false",
           "--set", "otlp.idle_flush=50ms"]


@pytest.mark.parametrize("endpoint", ["localhost:{port}", "https://localhost:{port}"])
def test_grpc_over_mutual_tls(certs, endpoint):
    received = Received()
    server, port = grpc_server(certs, received)
    # No scheme and OTEL_EXPORTER_OTLP_INSECURE unset: TLS, as the spec says.
    agent = start_agent(SIDECAR, {**tls_env(certs), "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                                  "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint.format(port=port)})
    try:
        sent = send_spans(agent)
        assert received.wait_for(set(sent)), f"{len(received.spans)} of {len(sent)} arrived"
        assert {k: received.spans[k] for k in sent} == sent
    finally:
        stop(agent)
        server.stop(0)


@pytest.mark.parametrize("how", ["endpoint", "dns+https", "dns+https-grpc"])
def test_mutual_tls_to_https_and_dns_backends(certs, how):
    received = Received()
    grpc_mode = how.endswith("grpc")
    server, port = (grpc_server if grpc_mode else https_server)(certs, received)
    if how == "endpoint":
        args = SIDECAR + ["--set", f"otlp.endpoint=https://localhost:{port}/v1/traces"]
    else:
        # Resolved to 127.0.0.1 (and ::1, where nothing listens: that backend is marked down and
        # its traces go to the next owner). The certificate names only localhost.
        args = SIDECAR + ["--set", f"otlp.endpoints=dns+https:localhost:{port}"]
    if grpc_mode:
        args += ["--set", "otlp.protocol=grpc"]
    # The same settings by key instead of by the spec's variables.
    args += ["--set", f"otlp.certificate={certs['ca']}",
             "--set", f"otlp.client_certificate={certs['client_cert']}",
             "--set", f"otlp.client_key={certs['client_key']}"]
    agent = start_agent(args)
    try:
        sent = send_spans(agent)
        assert received.wait_for(set(sent)), f"{len(received.spans)} of {len(sent)} arrived"
        assert {k: received.spans[k] for k in sent} == sent
    finally:
        stop(agent)
        if grpc_mode:
            server.stop(0)
        else:
            server.shutdown()


def test_a_server_the_ca_does_not_vouch_for_gets_nothing(certs):
    received = Received()
    server, port = https_server(certs, received)
    # The system's roots do not know trustme's CA: every attempt fails, and the log says why.
    agent = start_agent(SIDECAR + ["--set", f"otlp.endpoint=https://localhost:{port}/v1/traces",
                                   "--set", "otlp.retry_max_elapsed=1s"])
    try:
        sent = send_spans(agent, count=3)
        deadline = time.time() + 20
        while time.time() < deadline and not agent.logged("UnknownIssuer"):
            time.sleep(0.1)
        assert agent.logged("UnknownIssuer"), "".join(agent.log[-20:])
        assert not received.spans
        assert sent
    finally:
        stop(agent)
        server.shutdown()


def test_a_bad_certificate_file_stops_the_agent_with_its_name(tmp_path):
    missing = str(tmp_path / "nowhere" / "ca.pem")
    proc = subprocess.run(
        [BIN, "--exporters", "otlp", "--otlp-grpc-addr", "127.0.0.1:0",
         "--otlp-http-addr", "127.0.0.1:0", "--xray-udp-addr", "127.0.0.1:0",
         "--admin-addr", "127.0.0.1:0"],
        env={**{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OTEL_"))},
             "OTEL_EXPORTER_OTLP_CERTIFICATE": missing},
        capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert missing in proc.stderr, proc.stderr
