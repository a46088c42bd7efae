"""What the X-Ray tests share: a loopback fake X-Ray that records every call and checks its
SigV4 signature with botocore's signer, and that signature check itself."""
import collections
import datetime
import http.server
import threading
import time

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

KEY, SECRET, TOKEN, REGION = "AKIDSIDETRACETEST", "sidetrace/test+secret/KEY", "session-token-example", "eu-west-1"
DEADLINE_S = 20


def wait_until(pred, what, timeout=DEADLINE_S):
    deadline = time.time() + timeout
    while True:
        value = pred()
        if value:
            return value
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def verify_sigv4(method, url, headers, body, key=KEY, secret=SECRET, token=TOKEN, region=REGION,
                 service=None):
    """Rebuilds the request with the headers it says it signed and signs it with botocore at
    its own X-Amz-Date; None when the signature matches, else what is wrong. With `token`, the
    request must carry it as a signed x-amz-security-token; with token=None it must carry none."""
    auth = headers.get("authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return f"not SigV4: {auth!r}"
    fields = dict(p.strip().split("=", 1) for p in auth.split(" ", 1)[1].split(","))
    got_key, day, got_region, got_service, term = fields["Credential"].split("/")
    date = headers.get("x-amz-date", "")
    if (got_key, got_region, term) != (key, region, "aws4_request") or day != date[:8] \
            or (service is not None and got_service != service):
        return f"bad credential scope {fields['Credential']} for {date}"
    at = datetime.datetime.strptime(date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    if abs((datetime.datetime.now(datetime.timezone.utc) - at).total_seconds()) > 300:
        return f"stale X-Amz-Date {date}"
    signed = fields["SignedHeaders"].split(";")
    if token is None:
        if "x-amz-security-token" in headers or "x-amz-security-token" in signed:
            return "a session token where none was configured"
        if not {"host", "x-amz-date"} <= set(signed):
            return f"signed headers {signed}"
    else:
        if not {"host", "x-amz-date", "x-amz-security-token"} <= set(signed):
            return f"signed headers {signed}"
        if headers.get("x-amz-security-token") != token:
            return "no session token"
    req = AWSRequest(method=method, url=url, data=body, headers={h: headers[h] for h in signed})
    req.context["timestamp"] = date
    signer = SigV4Auth(Credentials(key, secret, token), got_service, region)
    want = signer.signature(signer.string_to_sign(req, signer.canonical_request(req)), req)
    return None if want == fields["Signature"] else f"signature {fields['Signature']} != botocore's {want}"


# One call the fake received; `problem` is verify's verdict (None: signed as botocore signs).
Call = collections.namedtuple("Call", "method path headers body problem")


class FakeXray:
    """An HTTP server on loopback standing in for X-Ray. Each call is recorded (with its
    signature checked by `verify(method, url, headers, body)`) and answered by `respond`, which
    subclasses override to return (status, headers, body)."""

    def __init__(self, verify=verify_sigv4):
        self.requests = []  # Call, in arrival order
        self.lock = threading.Lock()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_one(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                url = f"http://{headers.get('host')}{self.path}"
                call = Call(self.command, self.path, headers, body,
                            verify(self.command, url, headers, body))
                with fake.lock:
                    fake.requests.append(call)
                status, answer_headers, data = fake.respond(call)
                self.send_response(status)
                answer_headers = {k.lower(): v for k, v in (answer_headers or {}).items()}
                answer_headers.setdefault("content-type", "application/json")
                for k, v in answer_headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = handle_one

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def respond(self, call):
        return 404, {}, b'{"message":"not found"}'

    def calls(self, path):
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
