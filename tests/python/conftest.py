"""Starts the sidetrace binary on ephemeral loopback ports for the Python client tests."""
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("SIDETRACE_BIN", os.path.join(ROOT, "target", "debug", "sidetrace"))


class Agent:
    def __init__(self, proc, addrs):
        self.proc = proc
        self.grpc = addrs["otlp_grpc"]
        self.http = addrs["otlp_http"]
        self.xray_udp = addrs["xray_udp"]
        self.xray_proxy = addrs["xray_proxy"]
        self.admin = addrs["admin"]
        self.log = []  # the agent's stderr lines, as they come

    def logged(self, *parts):
        """The log lines holding every one of `parts`."""
        return [line for line in list(self.log) if all(p in line for p in parts)]

    def get(self, path):
        with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=5) as r:
            return r.status, r.read()


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_url():
    """moto's server (the AWS emulator), on a loopback port for the whole session."""
    port = free_port()
    server = os.path.join(os.path.dirname(sys.executable), "moto_server")
    proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1)
            break
        except Exception:
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def start_agent(extra_args=(), extra_env=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["RUST_LOG"] = "info"
    env.update(extra_env or {})
    proc = subprocess.Popen(
        [BIN, "--otlp-grpc-addr", "127.0.0.1:0", "--otlp-http-addr", "127.0.0.1:0",
         "--xray-udp-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", *extra_args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    addrs = {}
    startup = []
    deadline = time.time() + 20
    while "admin" not in addrs and time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        startup.append(line)
        m = re.search(r'listener="(\w+)" addr=(\S+)', line)
        if m:
            addrs[m.group(1)] = m.group(2)
    assert {"otlp_grpc", "otlp_http", "xray_udp", "xray_proxy", "admin"} <= set(addrs), f"agent did not report its listeners: {addrs}"
    agent = Agent(proc, addrs)
    agent.log.extend(startup)
    threading.Thread(target=lambda: [agent.log.append(line) for line in proc.stderr], daemon=True).start()
    return agent


@pytest.fixture
def agent():
    a = start_agent(["--exporters", "local"])
    yield a
    a.proc.terminate()
    assert a.proc.wait(timeout=30) == 0


@pytest.fixture
def xray_agent(moto_url):
    a = start_agent(["--sampling-ratio", "1", "--set", "xray.idle_flush=200ms"], {
        "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": moto_url,
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
    })
    yield a
    a.proc.terminate()
    assert a.proc.wait(timeout=30) == 0
