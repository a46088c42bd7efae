"""README.md's examples, run as written: the run command from "Two commands" on the built tree, the
`export`, `curl`, `sidetrace ...` and `sidetrace loadgen` lines against it, and every documented
flag, config key, env twin and endpoint checked against the binary.

Examples that cannot run here are skipped by name in SKIPPED, with the reason; an example this file
does not know how to run fails, so a new README example is either run or explicitly skipped.
"""
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

from conftest import ROOT, start_agent

README = os.path.join(ROOT, "README.md")
# `sidetrace ...` in the README means the built binary on PATH; the run command builds it.
RELEASE_DIR = os.path.join(ROOT, "target", "release")
BIN = os.path.join(RELEASE_DIR, "sidetrace")
# The defaults the README's examples rely on (they are written against a default agent).
ADMIN = "127.0.0.1:13133"
DEFAULT_PORTS = (4317, 4318, 13133)
# The trace ID the README's curl example asks for; the export examples send a trace with it.
README_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"

SKIPPED = {
    "./scripts/test": "it is the command running this test",
    "aws cloudwatch put-metric-alarm": "needs a real AWS account and the AWS CLI",
}


def readme_commands():
    """Every command of every ```sh block, continuation lines joined, in README order."""
    text = open(README, encoding="utf-8").read()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        pending = ""
        for line in block.splitlines():
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            line = pending + line
            pending = ""
            if line.strip() and not line.strip().startswith("#"):
                commands.append(line.strip())
    return commands


def two_commands():
    text = open(README, encoding="utf-8").read()
    section = text.split("## Two commands", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, flags=re.S).group(1)
    return [l.split("#")[0].strip() for l in block.splitlines() if l.strip()]


def kind_of(cmd):
    for prefix in SKIPPED:
        if cmd.startswith(prefix):
            return "skipped"
    if cmd.startswith("cargo run"):
        return "run"
    if cmd.startswith("export "):
        return "export"
    if cmd.startswith("curl "):
        return "curl"
    if cmd.startswith("sidetrace loadgen"):
        return "loadgen"
    if cmd.startswith("sidetrace config"):
        return "config"
    if cmd.startswith("sidetrace"):
        return "agent"
    return "unknown"


COMMANDS = readme_commands()


def ids(cmds):
    return [c[:60] for c in cmds]


def of_kind(*kinds):
    return [c for c in COMMANDS if kind_of(c) in kinds]


def shell(cmd, timeout=120, **kw):
    env = dict(os.environ, PATH=RELEASE_DIR + os.pathsep + os.environ["PATH"])
    env = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    env.update(kw.pop("env", {}))
    return subprocess.run(["bash", "-c", "set -euo pipefail\n" + cmd], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, **kw)


def get(path, timeout=5):
    try:
        with urllib.request.urlopen(f"http://{ADMIN}{path}", timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_ready(proc, what, limit=600):
    deadline = time.time() + limit
    while time.time() < deadline:
        assert proc.poll() is None, f"{what} exited with {proc.returncode} before /readyz"
        try:
            if get("/readyz", timeout=1)[0] == 200:
                return
        except (urllib.error.URLError, ConnectionError, socket.timeout):
            pass
        time.sleep(0.1)
    pytest.fail(f"{what}: /readyz never answered 200")


def ports_free():
    busy = []
    for port in DEFAULT_PORTS:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                busy.append(port)
    assert not busy, f"the README's examples use the default ports; {busy} are taken on this machine"


def start(cmd):
    """Starts a long-running README command in its own process group (as a shell would)."""
    ports_free()
    env = dict(os.environ, PATH=RELEASE_DIR + os.pathsep + os.environ["PATH"])
    env = {k: v for k, v in env.items() if not k.startswith(("AWS_", "SIDETRACE_"))}
    # Output goes to files, as to a terminal that keeps reading: a full pipe would stall the
    # console exporter's writes.
    out, err = tempfile.TemporaryFile(mode="w+"), tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(["bash", "-c", "exec " + cmd], cwd=ROOT, env=env,
                            stdout=out, stderr=err, text=True, start_new_session=True)
    proc.out, proc.err = out, err
    return proc


def stop(proc, what):
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"{what} did not exit within 30 s of SIGTERM")
    proc.err.seek(0)
    err = proc.err.read()
    assert code == 0, f"{what} exited {code} after SIGTERM: {err[-2000:]}"
    return err


def test_the_two_commands_are_the_run_and_test_commands():
    assert two_commands() == ["cargo run --release", "./scripts/test"]
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    assert "./scripts/test" in ci, ".ci/run calls the README's test command"


def test_every_example_is_run_or_skipped_by_name():
    unknown = [c for c in COMMANDS if kind_of(c) == "unknown"]
    assert not unknown, f"README examples this test does not run (run them, or skip by name): {unknown}"
    assert of_kind("run") and of_kind("curl") and of_kind("loadgen") and of_kind("agent")


@pytest.mark.parametrize("cmd", of_kind("skipped"), ids=ids(of_kind("skipped")))
def test_examples_that_cannot_run_here(cmd):
    reason = next(r for p, r in SKIPPED.items() if cmd.startswith(p))
    pytest.skip(f"not run here: {reason}")


SEND_ONE = """
import os, sys
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context
if sys.argv[1] == "grpc":
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
else:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
# The endpoint comes from OTEL_EXPORTER_OTLP_ENDPOINT, as the README's export line set it.
provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
parent = SpanContext(int(sys.argv[2], 16), 0x00f067aa0ba902b7, True, TraceFlags(1))
ctx = set_span_in_context(NonRecordingSpan(parent))
with provider.get_tracer("readme").start_as_current_span("GET /basket", context=ctx, kind=SpanKind.SERVER):
    pass
provider.shutdown()
"""


class TestRunCommand:
    """`cargo run --release` as written, then the examples that talk to a running agent."""

    @pytest.fixture(scope="class")
    def agent(self):
        cmd = next(c for c in two_commands() if c.startswith("cargo run"))
        proc = start(cmd)
        wait_ready(proc, cmd)
        yield proc
        err = stop(proc, cmd)
        assert "Shutdown requested" in err and "Stopped" in err, err[-2000:]

    @pytest.mark.parametrize("cmd", of_kind("export"), ids=ids(of_kind("export")))
    def test_export_lines_point_an_sdk_at_the_agent(self, agent, cmd):
        port = re.search(r":(\d+)", cmd).group(1)
        protocol = "grpc" if port == "4317" else "http"
        py = os.path.join(ROOT, ".venv", "bin", "python")
        r = shell(f"{cmd}\nexec {py} - {protocol} {README_TRACE}", input=SEND_ONE)
        assert r.returncode == 0, r.stderr
        for _ in range(200):
            status, body = get(f"/api/traces/{README_TRACE}")
            if status == 200 and any(s["name"] == "GET /basket" for s in json.loads(body)["spans"]):
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"the span sent after {cmd!r} never reached /api/traces")

    @pytest.mark.parametrize("cmd", of_kind("curl"), ids=ids(of_kind("curl")))
    def test_curl_examples_answer_json(self, agent, cmd):
        # The trace the curl example asks for exists once an export example sent it.
        r = shell(cmd)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert "error" not in doc, doc
        if README_TRACE in cmd:
            assert doc["spans"], doc

    def test_documented_endpoints_answer(self, agent):
        text = open(README, encoding="utf-8").read()
        paths = re.findall(r"^\| `GET (/[^`]*)`", text, flags=re.M)
        assert "/healthz" in paths and "/metrics" in paths, paths
        for path in paths:
            status, body = get(path.replace("{trace_id}", README_TRACE))
            assert status == 200, f"GET {path}: {status} {body[:200]!r}"

    def test_documented_metrics_exist(self, agent, moto_url):
        """Every metric the README names is on /metrics: of this local-mode agent, or of an
        AWS-mode one (against moto, persistent queue on) for the X-Ray and CloudWatch exporters'
        and the persistent queue's own."""
        text = open(README, encoding="utf-8").read()
        names = set()
        # `sidetrace_exporter_{sent,dropped}_spans_total` names two metrics; `sidetrace_memory_*` a prefix.
        for head, alts, tail in re.findall(r"\b(sidetrace_[a-z_]*)(?:\{([a-z,]+)\}([a-z_]+))?", text):
            names |= {head + a + tail for a in alts.split(",")} if alts else {head}
        status, body = get("/metrics")
        pages = [body.decode()]
        # With the persistent queue on, for its own metrics.
        spool = tempfile.mkdtemp(prefix="sidetrace-readme-spool-")
        aws = start_agent(["--exporters", "xray,cloudwatch", "--sampling-ratio", "1",
                           "--set", f"queue.dir={spool}"], {
            "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": moto_url,
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        })
        # A load-balancing OTLP exporter, for the gateway tier's metrics (no span is sent).
        balancing = start_agent(["--exporters", "otlp", "--set", "otlp.endpoints=http://127.0.0.1:9"])
        # The Kafka exporter and receiver, for theirs (no broker: nothing is sent or read).
        kafka = start_agent(["--exporters", "kafka", "--set", "kafka.receive=true",
                             "--set", "kafka.brokers=127.0.0.1:9"])
        try:
            pages.append(aws.get("/metrics")[1].decode())
            pages.append(balancing.get("/metrics")[1].decode())
            pages.append(kafka.get("/metrics")[1].decode())
        finally:
            for a in (aws, balancing, kafka):
                a.proc.terminate()
                a.proc.wait(timeout=30)
        families = {f for page in pages for f in re.findall(r"^# TYPE (\S+)", page, flags=re.M)}
        series = families | {f + s for f in families for s in ("_bucket", "_sum", "_count")}
        missing = sorted(n for n in names if n not in series
                         and not (n.endswith("_") and any(f.startswith(n) for f in families)))
        assert not missing, f"metrics the README names but /metrics lacks: {missing}"

    @pytest.mark.parametrize("cmd", of_kind("loadgen"), ids=ids(of_kind("loadgen")))
    def test_loadgen_examples_deliver(self, agent, cmd):
        r = shell(cmd, timeout=180)
        assert r.returncode == 0, r.stdout + r.stderr
        report = json.loads(r.stdout.strip().splitlines()[-1])
        assert report["requests_ok"] > 0, report
        # A closed loop runs the agent at saturation: refusals are its retryable backpressure.
        retryable = {"grpc_Unavailable", "grpc_ResourceExhausted", "http_503", "http_429"}
        assert set(report["failures"]) <= retryable, report


@pytest.mark.parametrize("cmd", of_kind("agent"), ids=ids(of_kind("agent")))
def test_agent_invocations_start_and_drain(cmd):
    proc = start(cmd)
    wait_ready(proc, cmd, limit=30)
    stop(proc, cmd)


@pytest.mark.parametrize("cmd", of_kind("config"), ids=ids(of_kind("config")))
def test_config_examples(cmd):
    r = shell(cmd)
    assert r.returncode == 0, r.stdout + r.stderr


def help_text(*args):
    r = subprocess.run([BIN, *args, "--help"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_documented_flags_exist():
    text = open(README, encoding="utf-8").read()
    # The flag column of the tables, `--…` code spans, and the sidetrace command lines.
    places = re.findall(r"^\| `(--[^`]*)`", text, flags=re.M) + re.findall(r"`(--[^`]*)`", text)
    places += [c for c in COMMANDS if c.startswith("sidetrace")]
    places += re.findall(r"`(sidetrace [^`]*)`", text)
    flags = {f for p in places for f in re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", p)} - {"--help"}
    assert len(flags) > 15, flags
    known = "".join(help_text(*sub) for sub in [(), ("loadgen",), ("healthcheck",)])
    missing = sorted(f for f in flags if not re.search(re.escape(f) + r"\b", known))
    assert not missing, f"flags the README names but no --help lists: {missing}"


def test_documented_keys_and_env_twins_exist():
    text = open(README, encoding="utf-8").read()
    default = subprocess.run([BIN, "config", "default"], capture_output=True, text=True).stdout
    sections = set(re.findall(r"^\[([a-z_]+)\]", default, flags=re.M))
    keys = {k for k in re.findall(r"`(?:--set )?([a-z_]+\.[a-z_]+)", text) if k.split(".")[0] in sections}
    keys |= set(re.findall(r"--set ([a-z_.]+)=", text)) - {"key"}
    assert len(keys) > 20, keys
    names = {f"{s}.{k}" for s, body in re.findall(r"^\[([a-z_]+)\]\n(.*?)(?=^\[|\Z)", default, flags=re.M | re.S)
             for k in re.findall(r"^([a-z_]+) =", body, flags=re.M)}
    names |= set(re.findall(r"^([a-z_]+) =", default.split("\n[", 1)[0], flags=re.M))
    missing = sorted(k for k in keys if k not in names)
    assert not missing, f"config keys the README names but `config default` lacks: {missing}"
    # Env twins: every SIDETRACE_* the README names is a key's twin (test-harness variables aside).
    harness = {"SIDETRACE_TEST_MOTO", "SIDETRACE_BIN", "SIDETRACE_CONFIG"}
    twins = set(re.findall(r"\b(SIDETRACE_[A-Z_]+[A-Z])\b", text)) - harness
    missing = sorted(t for t in twins if f"env: {t})" not in default)
    assert not missing, f"env variables the README names that set no key: {missing}"


def test_each_subcommand_help_shows_only_its_own_flags():
    loadgen = help_text("loadgen")
    for agent_flag in ["--otlp-grpc-addr", "--sampling-ratio", "--set", "--memory-limit"]:
        assert agent_flag not in loadgen, f"loadgen --help lists the agent's {agent_flag}"
    assert "--spans-per-request" in loadgen
    assert "--sampling-ratio" in help_text() and "--sampling-ratio" in help_text("run")
    health = help_text("healthcheck")
    assert "--admin-addr" in health and "--sampling-ratio" not in health
    assert "--set" not in help_text("config", "check")
