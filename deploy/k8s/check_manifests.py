#!/usr/bin/env python3
"""Checks on the sidetrace manifests that a JSON schema cannot make (run by test.sh).

  python3 check_manifests.py FILE.yaml...   # needs PyYAML; exit 1 on any problem

kubernetes-validate checks field names and types, but not values: it accepts
`restartPolicy: Allways`, a memory limit the agent's own limit does not fit under, or a probe
on the wrong path. Each check below is named in its messages.
"""
import re
import sys
from urllib.parse import urlsplit

import yaml

MiB = 1 << 20
MAX_MEMORY_FRACTION = 0.90  # as deploy/ecs/validate.py: ~75 % is the advice, 90 % the limit
ADMIN_PORT = 13133
UNITS = {"": 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "k": 10**3, "M": 10**6, "G": 10**9}
AGENT_UNITS = {"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30,
               "KB": 10**3, "kB": 10**3, "MB": 10**6, "GB": 10**9}


def size(text, units):
    m = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", str(text))
    return int(m.group(1)) * units[m.group(2)] if m and m.group(2) in units else None


def pod_spec(doc):
    kind = doc.get("kind")
    if kind == "Pod":
        return doc.get("spec") or {}
    if kind in ("Deployment", "DaemonSet", "StatefulSet"):
        return ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}
    return None


def is_sidetrace(c):
    return c.get("name") == "sidetrace" or "/sidetrace" in str(c.get("image", ""))


def check_agent(c, spec, in_init):
    errs = []
    env = {e.get("name"): e.get("value") for e in c.get("env") or []}
    limit = size(((c.get("resources") or {}).get("limits") or {}).get("memory", ""), UNITS)
    agent = size(env.get("SIDETRACE_MEMORY_LIMIT", ""), AGENT_UNITS)
    if limit is None:
        errs.append("[memory-limit] no resources.limits.memory")
    elif agent is None or agent < 16 * MiB:
        errs.append("[memory-limit] SIDETRACE_MEMORY_LIMIT %r missing or below 16MiB"
                    % env.get("SIDETRACE_MEMORY_LIMIT"))
    elif agent > MAX_MEMORY_FRACTION * limit:
        errs.append("[memory-limit] SIDETRACE_MEMORY_LIMIT %s is over %d%% of the %s limit (use ~75%%)"
                    % (env["SIDETRACE_MEMORY_LIMIT"], MAX_MEMORY_FRACTION * 100,
                       c["resources"]["limits"]["memory"]))
    if in_init and c.get("restartPolicy") != "Always":
        errs.append("[native-sidecar] an initContainer sidetrace needs restartPolicy: Always")
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                        ("readinessProbe", "/readyz")):
        get = (c.get(probe) or {}).get("httpGet") or {}
        port = ports.get(get.get("port"), get.get("port"))
        if get.get("path") != path or port != ADMIN_PORT:
            errs.append("[probes] %s must be httpGet %s on port %d, got %r" % (probe, path, ADMIN_PORT, get))
    sc = c.get("securityContext") or {}
    want = {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
            "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False}
    errs += ["[security-context] %s must be %r, got %r" % (k, v, sc.get(k))
             for k, v in want.items() if sc.get(k) != v]
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        errs.append("[security-context] capabilities.drop must include ALL")
    seccomp = sc.get("seccompProfile") or (spec.get("securityContext") or {}).get("seccompProfile") or {}
    if seccomp.get("type") != "RuntimeDefault":
        errs.append("[security-context] seccompProfile must be RuntimeDefault")
    return errs


def check_doc(doc):
    errs = []
    spec = pod_spec(doc)
    if doc.get("kind") == "Service" and doc["metadata"]["name"].endswith("-headless") \
            and (doc.get("spec") or {}).get("clusterIP") != "None":
        errs.append("[headless-service] clusterIP must be None")
    if spec is None:
        return errs
    agents = [(c, True) for c in spec.get("initContainers") or [] if is_sidetrace(c)]
    agents += [(c, False) for c in spec.get("containers") or [] if is_sidetrace(c)]
    if not agents:
        return errs + ["[agent-present] no sidetrace container"]
    for c, in_init in agents:
        errs += check_agent(c, spec, in_init)
    if (spec.get("terminationGracePeriodSeconds") or 30) < 30:
        errs.append("[grace-period] terminationGracePeriodSeconds must be at least 30 (25 s drain)")
    if spec.get("automountServiceAccountToken") is not False:
        errs.append("[no-api-token] set automountServiceAccountToken: false")
    for c in spec.get("containers") or []:
        env = {e.get("name"): e.get("value") for e in c.get("env") or []}
        if not is_sidetrace(c) and "OTEL_EXPORTER_OTLP_ENDPOINT" in env \
                and urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"]).hostname != "localhost":
            errs.append("[app-endpoint] %s must send to the sidecar on localhost" % c.get("name"))
    if doc.get("kind") == "DaemonSet":
        host = {(p.get("hostPort"), p.get("protocol", "TCP")) for c, _ in agents for p in c.get("ports") or []}
        for need in ((4317, "TCP"), (4318, "TCP"), (2000, "UDP"), (2000, "TCP")):
            if need not in host:
                errs.append("[host-ports] the DaemonSet needs hostPort %d/%s" % need)
    return errs


def main(paths):
    problems = 0
    for path in paths:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for doc in docs:
            for e in check_doc(doc):
                problems += 1
                print("FAIL %s %s/%s %s" % (path, doc.get("kind"), doc.get("metadata", {}).get("name"), e))
    print("check_manifests.py: %s in %d file(s)" % ("%d problem(s)" % problems if problems else "OK", len(paths)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
