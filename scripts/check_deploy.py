"""The checks of scripts/check-deploy (run inside its venv: helm-python-sdk, kubernetes-validate).

Offline and quiet: one line per check on success, the failing check and why otherwise.
Usage: check_deploy.py --priorfetch BIN [--promtool BIN] [--systemd-analyze BIN]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "priorfetch"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
ALERTS_TEST = ROOT / "deploy" / "prometheus" / "alerts.test.yaml"
CHART_ALERTS = CHART / "files" / "alerts.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "priorfetch.json"
UNIT = ROOT / "deploy" / "systemd" / "priorfetch.service"

# Kubernetes versions the manifests must be valid for: the chart's kubeVersion floor and the
# newest schema kubernetes-validate ships.
KUBE_VERSIONS = ["1.25.0", kubernetes_validate.latest_version()]

# The metric contract of docs/architecture.md ("Metrics"); planner/mover register theirs later, so
# these are allowed even before the code has them. Anything else must be registered in code.
CONTRACT_METRICS = {
    "priorfetch_events_total",
    "priorfetch_cfind_duration_seconds",
    "priorfetch_cfind_matches_total",
    "priorfetch_priors_selected_total",
    "priorfetch_jobs",
    "priorfetch_job_attempts_total",
    "priorfetch_suboperations_total",
    "priorfetch_retrieve_duration_seconds",
    "priorfetch_retrieve_bytes_total",
    "priorfetch_associations_active",
    "priorfetch_archive_up",
    "priorfetch_exams_ready_total",
    # the signals read from the database by every process (crates/signals)
    "priorfetch_exams_upcoming",
    "priorfetch_exams_readiness",
    "priorfetch_oldest_due_job_age_seconds",
    "priorfetch_workers_alive",
    "priorfetch_build_info",
}

# Sentinels for secret values: none may appear outside a Secret.
SENTINELS = {
    "databasePassword": "sentinel-db-5f1c",
    "rabbitmqUrl": "amqps://priorfetch:sentinel-mq-8a2e@mq.example.internal/%2f",
    "kafkaPassword": "sentinel-kafka-03d9",
}


class CheckFailed(Exception):
    pass


passed: list[str] = []
_last = time.monotonic()


def ok(what: str) -> None:
    global _last
    now = time.monotonic()
    passed.append(what)
    print(f"check-deploy: ok   {what} ({now - _last:.1f} s)")
    _last = now


def fail(what: str, why: str) -> None:
    raise CheckFailed(f"{what}: {why}")


# --- helm -----------------------------------------------------------------------------


def load_values(path: Path) -> dict:
    # Helm's own YAML reader (the `-f file` path), not PyYAML.
    return helm.values_from_yaml(path.read_text())


def lint(name: str, values: dict | None) -> None:
    report = helm.lint(str(CHART), values, strict=True)
    problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    errors = report.get("errors") or []
    if problems or errors:
        lines = [f"{m['path']}: {m['error']}" for m in problems] + [str(e) for e in errors]
        fail(f"helm lint --strict ({name})", "; ".join(lines))


def render(chart: helm.Chart, name: str, values: dict | None) -> list[dict]:
    try:
        rendered = chart.render(values, name="pf", namespace="priorfetch", is_install=True)
    except helm.HelmError as e:
        fail(f"helm template ({name})", str(e))
    docs = []
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            if not text.strip():
                fail(f"helm template ({name})", "NOTES.txt renders empty")
            continue
        try:
            for doc in yaml.safe_load_all(text):
                if doc:
                    doc["__template"] = template
                    docs.append(doc)
        except yaml.YAMLError as e:
            fail(f"helm template ({name})", f"{template} is not valid YAML: {e}")
    return docs


def kind_of(doc: dict) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def validate_manifests(name: str, docs: list[dict]) -> int:
    checked = 0
    for doc in docs:
        body = {k: v for k, v in doc.items() if k != "__template"}
        if body.get("apiVersion", "").startswith("monitoring.coreos.com/"):
            check_prometheus_operator(name, body, docs)
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(body, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = "/".join(str(p) for p in e.path)
                fail(f"kubernetes-validate {version} ({name})", f"{kind_of(body)} at {path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                fail(f"kubernetes-validate {version} ({name})", f"{kind_of(body)}: {e}")
        checked += 1
    return checked


def check_prometheus_operator(name: str, doc: dict, docs: list[dict]) -> None:
    # No schema for the operator's CRDs in kubernetes-validate: check what the chart controls.
    what = f"{kind_of(doc)} ({name})"
    if doc["kind"] == "PrometheusRule":
        if doc.get("spec") != yaml.safe_load(ALERTS.read_text()):
            fail(what, "spec differs from deploy/prometheus/alerts.yaml")
    elif doc["kind"] == "ServiceMonitor":
        selector = doc["spec"]["selector"]["matchLabels"]
        ports = {
            p["name"]
            for d in docs
            if d.get("kind") == "Service" and selector.items() <= d["metadata"]["labels"].items()
            for p in d["spec"]["ports"]
        }
        for endpoint in doc["spec"]["endpoints"]:
            if endpoint["port"] not in ports:
                fail(what, f"endpoint port {endpoint['port']!r} is not a port of the selected Services {sorted(ports)}")
    else:
        fail(what, "unexpected Prometheus Operator kind")


def configmaps(docs: list[dict]) -> dict[str, str]:
    return {
        d["metadata"]["name"]: d["data"]["priorfetch.toml"]
        for d in docs
        if d.get("kind") == "ConfigMap" and "priorfetch.toml" in d.get("data", {})
    }


def config_check(name: str, docs: list[dict], binary: str, workdir: Path) -> None:
    files = configmaps(docs)
    if not files:
        fail(f"config check ({name})", "no ConfigMap with priorfetch.toml rendered")
    if len(set(files.values())) != 1:
        fail(f"config check ({name})", f"ConfigMaps differ: {sorted(files)} (the migration hook must see the same file)")
    path = workdir / f"{name}.toml"
    path.write_text(next(iter(files.values())))
    # PRIORFETCH__* of the caller's shell must not mask or fix the rendered file; the pod's own
    # PRIORFETCH__* variables (secrets included) must name real keys, as the pods will see them.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRIORFETCH__")}
    pod_env = container_env(docs, "pf-priorfetch-mover")
    env.update(pod_env)
    run = subprocess.run(
        [binary, "config", "check", "--config", str(path)], env=env, capture_output=True, text=True, timeout=60
    )
    if run.returncode != 0:
        fail(f"priorfetch config check ({name})", f"exit {run.returncode}: {run.stderr.strip()}\n--- rendered file ---\n{path.read_text()}")
    for key, value in pod_env.items():
        secret = re.search(r"sentinel-[a-z]+-[0-9a-f]{4}", value)
        if secret and secret.group(0) in run.stdout:
            fail(f"priorfetch config check ({name})", f"prints the secret of {key}")


def container_env(docs: list[dict], deployment: str) -> dict[str, str]:
    """The PRIORFETCH__* environment of a Deployment's container, secrets resolved from the
    rendered Secret (a stand-in value for a Secret the chart does not render)."""
    secrets = {
        d["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in (d.get("data") or {}).items()}
        for d in docs
        if d.get("kind") == "Secret"
    }
    pod = next(d for d in docs if d.get("kind") == "Deployment" and d["metadata"]["name"] == deployment)
    env = {}
    for var in pod["spec"]["template"]["spec"]["containers"][0].get("env", []):
        if not var["name"].startswith("PRIORFETCH__"):
            continue
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if ref is None:
            env[var["name"]] = var["value"]
        elif ref["name"] not in secrets:
            env[var["name"]] = "amqp://u:stand-in@mq/%2f" if var["name"].endswith("__URL") else "stand-in"
        elif ref["key"] in secrets[ref["name"]]:
            env[var["name"]] = secrets[ref["name"]][ref["key"]]
    return env


def check_workloads(name: str, docs: list[dict]) -> None:
    deployments = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Deployment"}
    want = {"pf-priorfetch-listener", "pf-priorfetch-planner", "pf-priorfetch-mover"}
    if set(deployments) != want:
        fail(f"workloads ({name})", f"Deployments {sorted(deployments)}, expected {sorted(want)}")
    for dname, d in deployments.items():
        pod = d["spec"]["template"]
        container = pod["spec"]["containers"][0]
        component = dname.rsplit("-", 1)[1]
        if container.get("args", [])[:1] != [component]:
            fail(f"workloads ({name})", f"{dname} runs {container.get('args')}, expected `{component} --config ...`")
        if not pod["metadata"].get("annotations", {}).get("checksum/config"):
            fail(f"workloads ({name})", f"{dname} has no checksum/config annotation")
        sc = container.get("securityContext", {})
        if not sc.get("readOnlyRootFilesystem") or not pod["spec"].get("securityContext", {}).get("runAsNonRoot"):
            fail(f"workloads ({name})", f"{dname} must run as non-root with a read-only root filesystem")
        probes = {container.get(p, {}).get("httpGet", {}).get("path") for p in ("livenessProbe", "readinessProbe")}
        if probes != {"/healthz", "/readyz"}:
            fail(f"workloads ({name})", f"{dname} probes {probes}")
        env = {e["name"] for e in container.get("env", [])}
        if "PRIORFETCH__DATABASE__PASSWORD" not in env:
            fail(f"workloads ({name})", f"{dname} gets no PRIORFETCH__DATABASE__PASSWORD")
    mover = deployments["pf-priorfetch-mover"]["spec"]["template"]["spec"]
    if not any(v["name"] == "spool" for v in mover["volumes"]):
        fail(f"workloads ({name})", "the mover has no spool volume")
    hooks = [d for d in docs if d.get("kind") == "Job"]
    if not hooks or hooks[0]["spec"]["template"]["spec"]["containers"][0]["args"][:1] != ["migrate"]:
        fail(f"workloads ({name})", "no `priorfetch migrate` Job")
    if "pre-install" not in hooks[0]["metadata"].get("annotations", {}).get("helm.sh/hook", ""):
        fail(f"workloads ({name})", "the migrate Job is not a pre-install hook")


def check_no_leak(name: str, docs: list[dict]) -> None:
    for doc in docs:
        if doc.get("kind") == "Secret":
            continue
        text = yaml.safe_dump(doc)
        for key, sentinel in SENTINELS.items():
            if re.search(r"sentinel-[a-z]+-[0-9a-f]{4}", sentinel).group(0) in text:
                fail(f"secrets ({name})", f"secrets.{key} appears in {kind_of(doc)} ({doc['__template']})")


def check_schema_rejects(chart: helm.Chart) -> None:
    bad = {
        "config.database.password": {"config": {"database": {"password": "x"}}},
        "config.database.url with a password": {"config": {"database": {"url": "postgres://u:pw@db/pf"}}},
        "config.intake.kafka.password": {"config": {"intake": {"kafka": {"password": "x"}}}},
        "listener.replicas < 0": {"listener": {"replicas": -1}},
        "a loopback admin_listen": {"config": {"service": {"admin_listen": "127.0.0.1:9464"}}},
        "mover.spool.type": {"mover": {"spool": {"type": "hostPath"}}},
    }
    for what, values in bad.items():
        try:
            chart.validate_schema(chart.merge_values(values))
        except helm.HelmValuesError:
            continue
        fail("values.schema.json", f"accepts {what}")
    # Sections added by newer versions ([planner], [mover], archives[].query_issuer) must pass.
    chart.validate_schema(
        chart.merge_values({"config": {"planner": {"concurrency": 4}, "archives": [
            {"name": "a", "ae_title": "A", "host": "h", "port": 104, "query_issuer": True}]}})
    )


def check_shared_spool_refused(chart: helm.Chart) -> None:
    # A starting mover deletes unmarked job folders: on a shared volume, other replicas' C-GETs.
    for spool in ({"type": "pvc"}, {"existingClaim": "mine"}):
        values = {"mover": {"replicas": 2, "spool": spool}}
        try:
            chart.render(values, name="pf", namespace="priorfetch", is_install=True)
        except helm.HelmError as e:
            if "shared by every mover replica" not in str(e):
                fail("shared spool", f"refused for another reason: {e}")
            continue
        fail("shared spool", f"{spool} with 2 mover replicas rendered")


def check_chart(binary: str, workdir: Path) -> None:
    production = load_values(CHART / "values-production.yaml")
    with_secrets = {
        "secrets": dict(SENTINELS),
        "mover": {"replicas": 1, "spool": {"type": "pvc"}, "extraPorts": [{"name": "dicom", "port": 11112}]},
        "otel": {"endpoint": "http://otel-collector:4318", "protocol": "http/protobuf"},
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
    }
    cases = {"default": None, "production": production, "chart-secrets": with_secrets}
    for name, values in cases.items():
        lint(name, values)
    ok("helm lint --strict: " + ", ".join(f"{n} values" for n in cases))

    with helm.Chart.load(str(CHART)) as chart:
        check_schema_rejects(chart)
        ok("values.schema.json rejects secrets in config and bad knobs, accepts new config sections")
        check_shared_spool_refused(chart)
        ok("a pvc spool shared by several mover replicas is refused")
        total = 0
        for name, values in cases.items():
            docs = render(chart, name, values)
            total += validate_manifests(name, docs)
            check_workloads(name, docs)
            check_no_leak(name, docs)
            config_check(name, docs, binary, workdir)
        ok(f"helm template + kubernetes-validate --strict ({' and '.join(KUBE_VERSIONS)}): {total} manifests")
        ok("workloads: 3 Deployments with probes, checksum, non-root read-only fs; migrate hook; no secret outside Secrets")
        ok("priorfetch config check accepts the rendered ConfigMap TOML with the pods' PRIORFETCH__* env: " + ", ".join(cases))


# --- prometheus, grafana, systemd -------------------------------------------------------


def code_metrics() -> set[str]:
    names = set()
    for path in list(ROOT.glob("crates/*/src/**/metrics.rs")) + list(ROOT.glob("services/*/src/**/metrics.rs")):
        names.update(re.findall(r'"(priorfetch_[a-z0-9_]+)"', path.read_text()))
    return names


def unknown_metrics(exprs: list[str], allowed: set[str]) -> set[str]:
    unknown = set()
    for expr in exprs:
        for name in re.findall(r"\bpriorfetch_[a-zA-Z0-9_]+", expr):
            base = re.sub(r"_(bucket|count|sum)$", "", name)
            if name not in allowed and base not in allowed:
                unknown.add(name)
    return unknown


def check_prometheus(promtool: str, allowed: set[str]) -> None:
    if CHART_ALERTS.read_bytes() != ALERTS.read_bytes():
        fail("alerts", f"{CHART_ALERTS.relative_to(ROOT)} differs from {ALERTS.relative_to(ROOT)}: "
             f"cp {ALERTS.relative_to(ROOT)} {CHART_ALERTS.relative_to(ROOT)}")
    for args in (["check", "rules", str(ALERTS)], ["test", "rules", str(ALERTS_TEST)]):
        run = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120, cwd=ALERTS.parent)
        if run.returncode != 0:
            fail(f"promtool {' '.join(args[:2])}", (run.stdout + run.stderr).strip())
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    rules = [r for g in groups for r in g["rules"]]
    unknown = unknown_metrics([r["expr"] for r in rules], allowed)
    if unknown:
        fail("alerts", f"metrics not in the contract nor registered in code: {sorted(unknown)}")
    tested = {t["alertname"] for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"] for t in test.get("alert_rule_test", [])}
    untested = {r["alert"] for r in rules if "alert" in r} - tested
    if untested:
        fail("promtool test rules", f"alerts without a unit test: {sorted(untested)}")
    alerts = sum(1 for r in rules if "alert" in r)
    ok(f"promtool check rules + test rules: {alerts} alerts, {len(rules) - alerts} recording rules, each alert tested")


def check_dashboard(allowed: set[str]) -> None:
    try:
        dashboard = json.loads(DASHBOARD.read_text())
    except json.JSONDecodeError as e:
        fail("grafana dashboard", f"{DASHBOARD.relative_to(ROOT)} is not JSON: {e}")
    panels = [p for p in dashboard.get("panels", []) if p.get("type") != "row"]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    exprs += [str(v.get("query", "")) for v in dashboard.get("templating", {}).get("list", [])]
    if not panels or any(not p.get("targets") for p in panels):
        fail("grafana dashboard", "a panel without queries")
    unknown = unknown_metrics(exprs, allowed)
    if unknown:
        fail("grafana dashboard", f"metrics not in the contract nor registered in code: {sorted(unknown)}")
    used = {re.sub(r"_(bucket|count|sum)$", "", n) for e in exprs for n in re.findall(r"\bpriorfetch_[a-z0-9_]+", e)}
    missing = CONTRACT_METRICS - used
    if missing:
        fail("grafana dashboard", f"contract metrics without a panel: {sorted(missing)}")
    ok(f"grafana dashboard: {len(panels)} panels, every contract metric shown, no unknown metric")


def check_systemd(analyzer: str | None, workdir: Path, binary: str) -> None:
    if not analyzer:
        ok("systemd unit: skipped (no systemd-analyze)")
        return
    # verify wants the ExecStart binaries to exist: point them at the one just built
    unit = workdir / "priorfetch.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/priorfetch", os.path.abspath(binary)))
    run = subprocess.run([analyzer, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    if run.returncode != 0 or run.stderr.strip():
        fail("systemd-analyze verify", (run.stdout + run.stderr).strip())
    ok("systemd-analyze verify deploy/systemd/priorfetch.service")


def check_build_prerequisites() -> None:
    # The README's package list is the one scripts/peers.sh installs before every CI build,
    # so the list a reader follows on a fresh machine is the list CI builds with.
    readme = re.search(r"`apt-get install ([a-z0-9 .+-]+)`", (ROOT / "README.md").read_text())
    peers = re.search(r"ensure_build_tools\(\) \{.*?apt_install ([a-z0-9 .+-]+)\n", (ROOT / "scripts/peers.sh").read_text(), re.S)
    if not readme or not peers:
        fail("build prerequisites", "no `apt-get install ...` in README.md or no ensure_build_tools in scripts/peers.sh")
    if set(readme.group(1).split()) != set(peers.group(1).split()):
        fail("build prerequisites", f"README.md lists {readme.group(1)!r}, scripts/peers.sh installs {peers.group(1)!r}")
    ok("README.md build prerequisites are the packages scripts/peers.sh installs for CI")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--priorfetch", required=True)
    parser.add_argument("--promtool", required=True)
    parser.add_argument("--systemd-analyze")
    args = parser.parse_args()
    helm.disable_logging()
    allowed = CONTRACT_METRICS | code_metrics()
    try:
        with tempfile.TemporaryDirectory(prefix="check-deploy.") as tmp:
            check_chart(args.priorfetch, Path(tmp))
            check_prometheus(args.promtool, allowed)
            check_dashboard(allowed)
            check_systemd(args.systemd_analyze, Path(tmp), args.priorfetch)
            check_build_prerequisites()
    except CheckFailed as e:
        print(f"check-deploy: FAIL {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
