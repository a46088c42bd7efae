"""Starts the sidetrace binary on ephemeral loopback ports for the Python client tests."""
import os
import re
import subprocess
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
        self.admin = addrs["admin"]

    def get(self, path):
        with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=5) as r:
            return r.status, r.read()


@pytest.fixture
def agent():
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["RUST_LOG"] = "info"
    proc = subprocess.Popen(
        [BIN, "--otlp-grpc-addr", "127.0.0.1:0", "--otlp-http-addr", "127.0.0.1:0",
         "--admin-addr", "127.0.0.1:0", "--exporters", "local"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    addrs = {}
    deadline = time.time() + 20
    while len(addrs) < 3 and time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        m = re.search(r'listener="(\w+)" addr=(\S+)', line)
        if m:
            addrs[m.group(1)] = m.group(2)
    assert len(addrs) == 3, f"agent did not report its listeners: {addrs}"
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    yield Agent(proc, addrs)
    proc.terminate()
    assert proc.wait(timeout=30) == 0
