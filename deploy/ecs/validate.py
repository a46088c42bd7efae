#!/usr/bin/env python3
"""Validates the ECS files in this folder, offline.

  python3 deploy/ecs/validate.py              # every *task-definition*.json and the IAM policies
  python3 deploy/ecs/validate.py --self-test  # breaks the good files in known ways; each must fail

Step 1 is botocore's own request validator against the RegisterTaskDefinition input shape
(unknown keys, wrong types, missing required members, enum values) - the same check the AWS CLI
does before sending. Step 2 is the named checks below, for what botocore cannot know (the
Fargate cpu/memory table, how sidetrace must be wired as a sidecar, the IAM policy). Exit 0 when
all pass, 1 on any failure, 2 when botocore or a file is missing.
"""
import argparse
import copy
import glob
import json
import os
import re
import sys
from urllib.parse import urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))
SIDECAR_NAME = "sidetrace"
HEALTH_COMMAND = ["CMD", "/sidetrace", "healthcheck"]
DEFAULT_NAMESPACE = "Sidetrace"  # sidetrace's cloudwatch.namespace default
XRAY_ACTIONS = ["xray:PutTraceSegments", "xray:GetSamplingRules", "xray:GetSamplingTargets"]
MIN_STOP_TIMEOUT, MAX_STOP_TIMEOUT = 30, 120  # sidetrace drains 25 s; Fargate allows at most 120
MAX_MEMORY_FRACTION = 0.90  # SIDETRACE_MEMORY_LIMIT above this share of the hard limit: OOM risk
MiB = 1 << 20

# Valid Fargate (Linux) task sizes: CPU units -> memory MiB. From the Fargate task size table;
# 8 and 16 vCPU need platform version 1.4.0 or later.
FARGATE_SIZES = {
    256: [512, 1024, 2048],
    512: list(range(1024, 4096 + 1, 1024)),
    1024: list(range(2048, 8192 + 1, 1024)),
    2048: list(range(4096, 16384 + 1, 1024)),
    4096: list(range(8192, 30720 + 1, 1024)),
    8192: list(range(16384, 61440 + 1, 4096)),
    16384: list(range(32768, 122880 + 1, 8192)),
}

# ECS healthCheck limits (seconds / count) that the API enforces but botocore's model does not.
HEALTH_RANGES = {"interval": (5, 300), "timeout": (2, 60), "retries": (1, 10), "startPeriod": (0, 300)}


def die(msg, code):
    print("validate.py: " + msg, file=sys.stderr)
    sys.exit(code)


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as e:
        die("FAIL %s is not valid JSON: %s" % (os.path.basename(path), e), 1)


def parse_task_size(text, unit):
    """ECS task cpu/memory strings: "512" or "0.5 vCPU" (cpu), "1024" or "1 GB" (memory)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(%s)?\s*" % unit, str(text), re.IGNORECASE)
    if not m:
        return None
    n = float(m.group(1)) * (1024 if m.group(2) else 1)
    return int(n) if n == int(n) else None


def parse_bytes(text):
    """The sizes sidetrace's own parser accepts: an integer with an optional unit."""
    m = re.fullmatch(r"\s*(\d+)\s*(B|KiB|MiB|GiB|KB|kB|MB|GB)?\s*", text)
    if not m:
        return None
    mul = {None: 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30,
           "KB": 1000, "kB": 1000, "MB": 10**6, "GB": 10**9}[m.group(2)]
    return int(m.group(1)) * mul


def env_of(container):
    return {e.get("name"): e.get("value") for e in container.get("environment", [])}


def find_sidecar(td):
    for c in td.get("containerDefinitions", []):
        if c.get("name") == SIDECAR_NAME:
            return c
    return None


# --- step 1: botocore ---------------------------------------------------------------------------

def botocore_errors(td):
    import botocore.session
    import botocore.validate
    shape = (botocore.session.get_session().get_service_model("ecs")
             .operation_model("RegisterTaskDefinition").input_shape)
    report = botocore.validate.ParamValidator().validate(td, shape)
    if not report.has_errors():
        return []
    lines = report.generate_report().splitlines()
    return [l.strip() for l in lines if l.strip() and not l.startswith("Parameter validation failed")]


# --- step 2: the named task definition checks ---------------------------------------------------
# Each takes the task definition and its sidecar (or None) and returns a list of messages.

def check_fargate_cpu_memory_pair(td, sc):
    if "FARGATE" not in td.get("requiresCompatibilities", []):
        return []
    cpu, mem = parse_task_size(td.get("cpu", ""), "vcpu"), parse_task_size(td.get("memory", ""), "gb")
    if cpu is None or mem is None:
        return ["Fargate needs task-level cpu and memory, got cpu=%r memory=%r"
                % (td.get("cpu"), td.get("memory"))]
    if mem not in FARGATE_SIZES.get(cpu, []):
        return ["cpu %d with memory %d MiB is not a Fargate task size (for cpu %d: %s)"
                % (cpu, mem, cpu, FARGATE_SIZES.get(cpu, "no such cpu value"))]
    return []


def check_fargate_awsvpc(td, sc):
    if "FARGATE" in td.get("requiresCompatibilities", []) and td.get("networkMode") != "awsvpc":
        return ["Fargate needs networkMode awsvpc, got %r" % td.get("networkMode")]
    return []


def check_sidecar_present(td, sc):
    return [] if sc else ["no container named %r" % SIDECAR_NAME]


def check_sidecar_essential(td, sc):
    # ECS defaults essential to true, but say it: a dead agent must stop the task, not lose spans.
    return [] if sc is None or sc.get("essential") is True else ["sidetrace must be essential: true"]


def check_sidecar_healthcheck(td, sc):
    if sc is None:
        return []
    hc = sc.get("healthCheck") or {}
    errs = []
    if hc.get("command") != HEALTH_COMMAND:
        errs.append("healthCheck.command must be exactly %s (the image has no shell), got %r"
                    % (json.dumps(HEALTH_COMMAND), hc.get("command")))
    for key, (lo, hi) in HEALTH_RANGES.items():
        if key in hc and not lo <= hc[key] <= hi:
            errs.append("healthCheck.%s %r is outside ECS's %d..%d" % (key, hc[key], lo, hi))
    return errs


def check_sidecar_memory_limit(td, sc):
    if sc is None:
        return []
    hard = sc.get("memory")
    if not isinstance(hard, int) or hard <= 0:
        return ["sidetrace needs a hard memory limit (container 'memory', MiB)"]
    text = env_of(sc).get("SIDETRACE_MEMORY_LIMIT")
    if text is None:
        return ["SIDETRACE_MEMORY_LIMIT is not set: without it the agent is OOM-killed under load "
                "(use ~75%% of %d MiB, e.g. %dMiB)" % (hard, hard * 3 // 4)]
    limit = parse_bytes(text)
    if limit is None:
        return ["SIDETRACE_MEMORY_LIMIT %r is not a size (e.g. 96MiB)" % text]
    if limit < 16 * MiB:
        return ["SIDETRACE_MEMORY_LIMIT %r is below sidetrace's 16MiB minimum (0 disables it)" % text]
    if limit >= hard * MiB:
        return ["SIDETRACE_MEMORY_LIMIT %r is not below the hard limit of %d MiB" % (text, hard)]
    if limit > MAX_MEMORY_FRACTION * hard * MiB:
        return ["SIDETRACE_MEMORY_LIMIT %r is over %d%% of the %d MiB hard limit (use ~75%%)"
                % (text, MAX_MEMORY_FRACTION * 100, hard)]
    return []


def check_sidecar_stop_timeout(td, sc):
    if sc is None:
        return []
    t = sc.get("stopTimeout")
    if not isinstance(t, int) or not MIN_STOP_TIMEOUT <= t <= MAX_STOP_TIMEOUT:
        return ["sidetrace stopTimeout must be %d..%d s (it drains for up to 25 s), got %r"
                % (MIN_STOP_TIMEOUT, MAX_STOP_TIMEOUT, t)]
    return []


def check_sidecar_user(td, sc):
    if sc is not None and sc.get("user") not in ("65532", "65532:65532"):
        return ["sidetrace user must be \"65532\" (the image's non-root user), got %r" % sc.get("user")]
    return []


def check_sidecar_readonly_rootfs(td, sc):
    if sc is not None and sc.get("readonlyRootFilesystem") is not True:
        return ["sidetrace writes nothing to disk: set readonlyRootFilesystem: true"]
    return []


def check_sidecar_ports(td, sc):
    if sc is None:
        return []
    have = {(p.get("containerPort"), p.get("protocol", "tcp")) for p in sc.get("portMappings", [])}
    want = {(4317, "tcp"), (4318, "tcp"), (2000, "udp"), (2000, "tcp"), (13133, "tcp")}
    errs = ["sidetrace has no portMapping for %d/%s" % p for p in sorted(want - have)]
    for c in td.get("containerDefinitions", []):
        for p in c.get("portMappings", []):
            if td.get("networkMode") == "awsvpc" and p.get("hostPort") not in (None, p.get("containerPort")):
                errs.append("%s: with awsvpc hostPort must equal containerPort: %r" % (c.get("name"), p))
    return errs


def check_depends_on_sidecar_healthy(td, sc):
    errs = []
    for c in td.get("containerDefinitions", []):
        if c is sc:
            continue
        conds = {d.get("containerName"): d.get("condition") for d in c.get("dependsOn", [])}
        if conds.get(SIDECAR_NAME) != "HEALTHY":
            errs.append("%s must have dependsOn {containerName: sidetrace, condition: HEALTHY} "
                        "so it starts only once the agent listens" % c.get("name"))
    return errs


def check_app_otel_endpoint(td, sc):
    errs, seen = [], 0
    for c in td.get("containerDefinitions", []):
        if c is sc:
            continue
        env = env_of(c)
        for key in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
            if key not in env:
                continue
            seen += 1
            u = urlsplit(env[key] or "")
            try:
                port = u.port
            except ValueError:
                port = None
            if u.scheme not in ("http", "https") or u.hostname not in ("localhost", "127.0.0.1", "::1") \
                    or port not in (4317, 4318):
                errs.append("%s: %s=%r must be http://localhost:4318 (or :4317 for gRPC)"
                            % (c.get("name"), key, env[key]))
                continue
            proto = env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
            if (port == 4317) != (proto == "grpc") and proto:
                errs.append("%s: OTEL_EXPORTER_OTLP_PROTOCOL %r does not match port %d "
                            "(4317 is gRPC, 4318 is http/protobuf or http/json)" % (c.get("name"), proto, port))
    if seen == 0:
        errs.append("no app container sets OTEL_EXPORTER_OTLP_ENDPOINT")
    return errs


def check_container_memory_sum(td, sc):
    task_mem = parse_task_size(td.get("memory", ""), "gb")
    if task_mem is None:
        return []  # check_fargate_cpu_memory_pair reports it on Fargate; EC2 tasks may omit it
    total = 0
    for c in td.get("containerDefinitions", []):
        mem = c.get("memory") or c.get("memoryReservation") or 0
        total += mem if isinstance(mem, int) else 0  # a wrong type is botocore-schema's to report
    if total > task_mem:
        return ["containers reserve %d MiB (memory, else memoryReservation) but the task has %d"
                % (total, task_mem)]
    return []


def check_awslogs_options(td, sc):
    errs = []
    for c in td.get("containerDefinitions", []):
        lc = c.get("logConfiguration")
        if not lc:
            errs.append("%s has no logConfiguration" % c.get("name"))
            continue
        if lc.get("logDriver") == "awslogs":
            opts = lc.get("options", {})
            for key in ("awslogs-group", "awslogs-region", "awslogs-stream-prefix"):
                if not opts.get(key):
                    errs.append("%s: awslogs needs option %s" % (c.get("name"), key))
    if sc is not None and env_of(sc).get("SIDETRACE_LOG_FORMAT") != "json":
        errs.append("set SIDETRACE_LOG_FORMAT=json on sidetrace for the log driver")
    return errs


TASK_CHECKS = [
    check_fargate_cpu_memory_pair, check_fargate_awsvpc, check_sidecar_present,
    check_sidecar_essential, check_sidecar_healthcheck, check_sidecar_memory_limit,
    check_sidecar_stop_timeout, check_sidecar_user, check_sidecar_readonly_rootfs,
    check_sidecar_ports, check_depends_on_sidecar_healthy, check_app_otel_endpoint,
    check_container_memory_sum, check_awslogs_options,
]


def check_name(fn):
    return fn.__name__[len("check_"):].replace("_", "-")


def validate_task_def(td):
    """[(check name, message)] for one task definition; empty when it is good."""
    errs = [("botocore-schema", m) for m in botocore_errors(td)]
    sc = find_sidecar(td)
    for fn in TASK_CHECKS:
        try:
            errs += [(check_name(fn), m) for m in fn(td, sc)]
        except Exception as e:  # a malformed file (wrong types) must fail, never crash the script
            errs.append((check_name(fn), "could not run on this file: %s: %s" % (type(e).__name__, e)))
    return errs


# --- IAM policies -------------------------------------------------------------------------------

def as_list(v):
    return v if isinstance(v, list) else [v]


def allow_statements(policy):
    return [s for s in as_list(policy.get("Statement", [])) if isinstance(s, dict) and s.get("Effect") == "Allow"]


def policy_shape_errors(policy):
    if not isinstance(policy, dict) or policy.get("Version") != "2012-10-17":
        return ["Version must be \"2012-10-17\""]
    if not allow_statements(policy):
        return ["no Allow statement"]
    errs = []
    for s in allow_statements(policy):
        for a in as_list(s.get("Action", [])):
            if a == "*" or a.endswith(":*"):
                errs.append("statement %r allows the wildcard action %r" % (s.get("Sid"), a))
    return errs


def validate_policies(task_role, otlp_policy, trust, task_defs):
    """task_role: the parsed task-role-policy.json; otlp_policy/trust may be None (file absent)."""
    errs = [("policy-json-version", "task-role-policy.json: " + m) for m in policy_shape_errors(task_role)]
    if errs:
        return errs
    stmts = allow_statements(task_role)
    for action in XRAY_ACTIONS:
        if not any(action in as_list(s.get("Action", [])) and as_list(s.get("Resource")) == ["*"] for s in stmts):
            errs.append(("policy-xray-actions", "no Allow of %s on Resource \"*\"" % action))
    namespaces = set()
    for s in stmts:
        if "cloudwatch:PutMetricData" in as_list(s.get("Action", [])):
            ns = (s.get("Condition") or {}).get("StringEquals", {}).get("cloudwatch:namespace")
            if ns is None:
                errs.append(("policy-putmetricdata-condition", "statement %r allows PutMetricData without "
                             "StringEquals cloudwatch:namespace" % s.get("Sid")))
            namespaces.update(as_list(ns or []))
    if not namespaces and not any(e[0] == "policy-putmetricdata-condition" for e in errs):
        errs.append(("policy-putmetricdata-condition", "no Allow of cloudwatch:PutMetricData"))
    for path, td in task_defs:
        sc = find_sidecar(td) or {}
        env = env_of(sc)
        want = env.get("SIDETRACE_CLOUDWATCH_NAMESPACE") or DEFAULT_NAMESPACE
        if namespaces and want not in namespaces:
            errs.append(("policy-namespace-matches-task-def", "%s sends metrics to namespace %r but the "
                         "policy allows only %s" % (os.path.basename(path), want, sorted(namespaces))))
        if env.get("SIDETRACE_XRAY_MODE") == "otlp":
            granted = [a for p in (task_role, otlp_policy or {}) for s in allow_statements(p)
                       for a in as_list(s.get("Action", []))]
            if "xray:PutSpans" not in granted:
                errs.append(("policy-putspans-for-otlp-mode", "%s uses SIDETRACE_XRAY_MODE=otlp, which needs "
                             "xray:PutSpans (task-role-policy-xray-otlp.json)" % os.path.basename(path)))
    if otlp_policy is not None:
        errs += [("policy-xray-otlp-file", "task-role-policy-xray-otlp.json: " + m)
                 for m in policy_shape_errors(otlp_policy)]
        if not any("xray:PutSpans" in as_list(s.get("Action", [])) for s in allow_statements(otlp_policy)):
            errs.append(("policy-xray-otlp-file", "task-role-policy-xray-otlp.json does not allow xray:PutSpans"))
    if trust is not None:
        ok = any(as_list((s.get("Principal") or {}).get("Service")) == ["ecs-tasks.amazonaws.com"]
                 and "sts:AssumeRole" in as_list(s.get("Action", [])) for s in allow_statements(trust))
        if trust.get("Version") != "2012-10-17" or not ok:
            errs.append(("policy-trust", "task-role-trust-policy.json must let ecs-tasks.amazonaws.com "
                         "sts:AssumeRole, Version 2012-10-17"))
    return errs


# --- running ------------------------------------------------------------------------------------

def load_files():
    paths = sorted(glob.glob(os.path.join(HERE, "*task-definition*.json")))
    if not paths:
        die("no *task-definition*.json in %s" % HERE, 2)
    task_defs = [(p, load_json(p)) for p in paths]

    def optional(name):
        p = os.path.join(HERE, name)
        return load_json(p) if os.path.exists(p) else None

    task_role = optional("task-role-policy.json")
    if task_role is None:
        die("%s/task-role-policy.json is missing" % HERE, 2)
    return task_defs, task_role, optional("task-role-policy-xray-otlp.json"), optional("task-role-trust-policy.json")


def validate_all(task_defs, task_role, otlp_policy, trust):
    """{file label: [(check, message)]}"""
    out = {os.path.basename(p): validate_task_def(td) for p, td in task_defs}
    out["task-role-policy*.json"] = validate_policies(task_role, otlp_policy, trust, task_defs)
    return out


def run_validate():
    task_defs, task_role, otlp_policy, trust = load_files()
    results = validate_all(task_defs, task_role, otlp_policy, trust)
    failed = 0
    for label, errs in results.items():
        for check, msg in errs:
            print("FAIL %s [%s] %s" % (label, check, msg))
        failed += len(errs)
    if failed:
        print("validate.py: %d problem(s) in %d task definition(s) and the IAM policies" % (failed, len(task_defs)))
        return 1
    print("validate.py: OK: %d task definition(s) (botocore + %d named checks each) and the IAM policies"
          % (len(task_defs), len(TASK_CHECKS)))
    return 0


def app_of(td):
    return next(c for c in td["containerDefinitions"] if c["name"] != SIDECAR_NAME)


def set_env(container, name, value):
    container["environment"] = [e for e in container.get("environment", []) if e["name"] != name]
    container["environment"].append({"name": name, "value": value})


# (description, check expected to catch it, mutation of (task def, sidecar, task-role policy))
MUTATIONS = [
    ("typo'd key 'esential'", "botocore-schema",
     lambda td, sc, pol: sc.update(esential=sc.pop("essential"))),
    ("wrong type: memory \"128\" as a string", "botocore-schema",
     lambda td, sc, pol: sc.update(memory="128")),
    ("sidecar not essential", "sidecar-essential",
     lambda td, sc, pol: sc.update(essential=False)),
    ("app without dependsOn", "depends-on-sidecar-healthy",
     lambda td, sc, pol: app_of(td).pop("dependsOn")),
    ("SIDETRACE_MEMORY_LIMIT 256MiB above the 128 MiB hard limit", "sidecar-memory-limit",
     lambda td, sc, pol: set_env(sc, "SIDETRACE_MEMORY_LIMIT", "256MiB")),
    ("cpu 256 with memory 4096 (not a Fargate size)", "fargate-cpu-memory-pair",
     lambda td, sc, pol: td.update(cpu="256", memory="4096")),
    ("healthCheck through a shell", "sidecar-healthcheck",
     lambda td, sc, pol: sc["healthCheck"].update(command=["CMD-SHELL", "/sidetrace healthcheck"])),
    ("stopTimeout 10", "sidecar-stop-timeout",
     lambda td, sc, pol: sc.update(stopTimeout=10)),
    ("app exports to a remote collector", "app-otel-endpoint",
     lambda td, sc, pol: set_env(app_of(td), "OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")),
    ("app memory pushes the sum past the task", "container-memory-sum",
     lambda td, sc, pol: app_of(td).update(memoryReservation=1000)),
    ("metrics namespace not allowed by the policy", "policy-namespace-matches-task-def",
     lambda td, sc, pol: set_env(sc, "SIDETRACE_CLOUDWATCH_NAMESPACE", "Shop")),
    ("PutMetricData without the namespace condition", "policy-putmetricdata-condition",
     lambda td, sc, pol: [s.pop("Condition", None) for s in pol["Statement"]]),
]


def run_self_test():
    task_defs, task_role, otlp_policy, trust = load_files()
    good_path, good = next((p, td) for p, td in task_defs if os.path.basename(p) == "task-definition.json")
    base = validate_all([(good_path, good)], task_role, otlp_policy, trust)
    if any(base.values()):
        print("self-test: the unmodified files do not pass; run validate.py first")
        return 1
    passed = failed = 0
    for desc, expected, mutate in MUTATIONS:
        td, pol = copy.deepcopy(good), copy.deepcopy(task_role)
        mutate(td, find_sidecar(td), pol)
        errs = [e for es in validate_all([(good_path, td)], pol, otlp_policy, trust).values() for e in es]
        if any(check == expected for check, _ in errs):
            passed += 1
            print("ok   %-58s rejected by [%s]" % (desc, expected))
        else:
            failed += 1
            print("FAIL %-58s not rejected by [%s]; got %s" % (desc, expected, errs or "no error"))
    print("self-test: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--self-test", action="store_true", help="check that broken copies are rejected")
    args = ap.parse_args()
    try:
        import botocore  # noqa: F401
    except ImportError:
        die("botocore is not installed (pip install botocore)", 2)
    return run_self_test() if args.self_test else run_validate()


if __name__ == "__main__":
    sys.exit(main())
