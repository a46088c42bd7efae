"""X-Ray OTLP mode: the agent's SigV4 signature is checked against botocore's own signer
(an implementation we did not write), and the spliced OTLP body decodes to the spans sent."""
import http.server
import threading
import time

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from conftest import free_port, start_agent


class Capture(http.server.BaseHTTPRequestHandler):
    requests = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        Capture.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def sent_spans():
    return [s for _, _, b in Capture.requests
            for rs in ExportTraceServiceRequest.FromString(b).resource_spans
            for ss in rs.scope_spans for s in ss.spans]


def botocore_signature(url, headers, body, signed, secret, token):
    req = AWSRequest(method="POST", url=url, data=body, headers={h: headers[h] for h in signed})
    req.context["timestamp"] = headers["x-amz-date"]
    auth = SigV4Auth(Credentials("AKIDEXAMPLE", secret, token), "xray", "eu-west-1")
    canonical = auth.canonical_request(req)
    return auth.signature(auth.string_to_sign(req, canonical), req)


def test_otlp_mode_signature_matches_botocore_and_body_is_otlp():
    port = free_port()
    server = http.server.HTTPServer(("127.0.0.1", port), Capture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    agent = start_agent(["--exporters", "xray", "--sampling-ratio", "1", "--set", "xray.mode=otlp", "--set", "xray.idle_flush=200ms"], {
        "AWS_REGION": "eu-west-1", "AWS_ENDPOINT_URL_XRAY": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        "AWS_SESSION_TOKEN": "session-token-example",
    })
    try:
        provider = TracerProvider(resource=Resource.create({"service.name": "sigv4-shop"}))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"http://{agent.grpc}", insecure=True)))
        tracer = provider.get_tracer("sigv4")
        with tracer.start_as_current_span("GET /", kind=SpanKind.SERVER):
            with tracer.start_as_current_span("child"):
                pass
        provider.shutdown()
        for _ in range(100):
            if len(sent_spans()) >= 2:
                break
            time.sleep(0.1)
        assert Capture.requests, "the agent sent nothing"
        path, headers, body = Capture.requests[0]
        assert path == "/v1/traces"
        assert headers["content-type"] == "application/x-protobuf"
        assert headers["x-amz-security-token"] == "session-token-example"

        auth = headers["authorization"]
        assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
        assert "/eu-west-1/xray/aws4_request" in auth
        fields = dict(part.strip().split("=", 1) for part in auth.split(" ", 1)[1].split(","))
        signed = fields["SignedHeaders"].split(";")
        assert "host" in signed and "x-amz-date" in signed
        url = f"http://127.0.0.1:{port}/v1/traces"
        secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
        assert botocore_signature(url, headers, body, signed, secret, "session-token-example") == fields["Signature"]
        assert botocore_signature(url, headers, body, signed, "wrong-secret", "session-token-example") != fields["Signature"]

        assert sorted(s.name for s in sent_spans()) == ["GET /", "child"]
        rs = ExportTraceServiceRequest.FromString(body).resource_spans[0]
        names = {a.key: a.value.string_value for a in rs.resource.attributes}
        assert names["service.name"] == "sigv4-shop"
    finally:
        agent.proc.terminate()
        assert agent.proc.wait(timeout=30) == 0
        server.shutdown()
