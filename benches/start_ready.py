"""Start to /readyz 200, and VmRSS one second later, of the release binary (pinned to core 0).

    python3 benches/start_ready.py local|aws N

Polls /readyz with a fresh connection every 0.5 ms (a curl loop adds ~5 ms of process start per
poll). aws mode sets a region, keys and a loopback endpoint (nothing needs to listen there).
"""
import http.client, os, subprocess, sys, time, statistics
BIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "sidetrace")
mode, n = sys.argv[1], int(sys.argv[2])
env = dict(os.environ)
for k in ("AWS_REGION", "AWS_DEFAULT_REGION"): env.pop(k, None)
if mode == "aws":
    env.update(AWS_REGION="us-east-1", AWS_ENDPOINT_URL="http://127.0.0.1:34566", AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
res = []
for i in range(n):
    t0 = time.perf_counter()
    p = subprocess.Popen(["taskset", "-c", "0", BIN, "--otlp-grpc-addr", "127.0.0.1:34317", "--otlp-http-addr", "127.0.0.1:34318", "--admin-addr", "127.0.0.1:33133"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", 33133, timeout=1)
            c.request("GET", "/readyz")
            if c.getresponse().status == 200:
                break
        except OSError:
            time.sleep(0.0005)
    res.append((time.perf_counter() - t0) * 1000)
    time.sleep(1.0)
    rss = [l.split()[1] for l in open(f"/proc/{p.pid}/status") if l.startswith("VmRSS")][0]
    p.terminate(); p.wait()
    print(f"{res[-1]:.1f} ms rss {int(rss)/1024:.1f} MB", flush=True)
print("median", f"{statistics.median(res):.1f}")
