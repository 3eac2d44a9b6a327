"""Checks of the deployment files, run by scripts/check-deploy (which installs the
pinned tools this needs into target/tools and passes their paths).

- the Helm chart lints, and renders with several value sets; the guards of the
  chart refuse what they must refuse;
- every rendered manifest validates against the Kubernetes JSON schemas
  (kubernetes-validate, strict: unknown fields fail) for the oldest Kubernetes
  the chart supports and the newest one the schemas know; the prometheus-operator
  kinds against the strict subsets in deploy/tools/schemas;
- the rendered manifests keep the promises of docs/operations.md (3 API replicas,
  probes, secrets only from Secret objects, a node sees no API secret, ...), and
  every environment variable they set is one codebox reads (the registry in
  crates/codebox-config/src/env.rs);
- the chart's config file is accepted by codebox itself (`codebox config print`);
- the PrometheusRule is deploy/prometheus/alerts.yml, unchanged, and promtool
  accepts it;
- every metric the alert rules and the Grafana dashboard use is exported by a
  real codebox server (its /metrics text, scraped by scripts/check-deploy).

Prints one line per check and a closing `check-deploy: N passed, N failed`.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "codebox"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "codebox.json"
ENV_REGISTRY = ROOT / "crates" / "codebox-config" / "src" / "env.rs"
CRD_SCHEMAS = Path(__file__).resolve().parent / "schemas"

# The chart's kubeVersion floor and the newest version kubernetes-validate knows.
KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
RELEASE = "ci"
NAMESPACE = "codebox"

# Variables the chart sets that are not codebox settings (downward API helpers).
NON_CODEBOX_ENV = {"POD_IP"}
SECRET_KEYS = {
    "DATABASE_URL",
    "REDIS_URL",
    "API_KEY_SECRET",
    "JWT_SECRET",
    "CODEBOX_NODE_SECRET",
    "CODEBOX_BOOTSTRAP_API_KEY",
}
NODE_FORBIDDEN_SECRETS = {"API_KEY_SECRET", "JWT_SECRET", "REDIS_URL", "CODEBOX_BOOTSTRAP_API_KEY"}

FULL_VALUES: dict[str, Any] = {
    "ingress": {
        "enabled": True,
        "className": "nginx",
        "tls": [{"secretName": "codebox-tls", "hosts": ["codebox.example.com"]}],
    },
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
    "grafanaDashboard": {"enabled": True},
    "secret": {
        "create": True,
        "values": {
            "DATABASE_URL": "postgres://codebox:pw@postgres:5432/codebox",
            "REDIS_URL": "redis://redis:6379",
            "API_KEY_SECRET": "k" * 64,
            "JWT_SECRET": "j" * 64,
            "CODEBOX_NODE_SECRET": "n" * 64,
            "CODEBOX_BOOTSTRAP_API_KEY": "",
        },
    },
    "node": {
        "labels": {"zone": "eu-1a", "pool": "sandbox"},
        "nodeSelector": {"codebox.dev/sandbox-node": "true"},
        "tolerations": [
            {"key": "codebox.dev/sandbox-node", "operator": "Exists", "effect": "NoSchedule"}
        ],
        "capacity": {"cpu": 16, "memoryMb": 65536, "slots": 200},
    },
}
MINIMAL_VALUES: dict[str, Any] = {"node": {"enabled": False}, "networkPolicy": {"enabled": False}}
SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "full": FULL_VALUES,
    "api-only": MINIMAL_VALUES,
}


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, name: str, run: Callable[[], None]) -> None:
        try:
            run()
        except Exception as error:  # one failing check must not hide the others
            self.failed += 1
            detail = str(error) or traceback.format_exc()
            print(f"FAIL {name}: {first_lines(detail, 12)}")
        else:
            self.passed += 1
            print(f"ok   {name}")


def first_lines(text: str, count: int) -> str:
    lines = text.strip().splitlines()
    return "\n     ".join(lines[:count]) + ("\n     ..." if len(lines) > count else "")


def render(values: dict[str, Any]) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE)


def documents(rendered: dict[str, str]) -> list[dict[str, Any]]:
    docs = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {}).setdefault("namespace", NAMESPACE)
                docs.append(doc)
    return docs


def by_kind(docs: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc.get("kind") == kind]


def one(docs: Iterable[dict[str, Any]], kind: str, component: str | None = None) -> dict[str, Any]:
    found = [
        doc
        for doc in by_kind(docs, kind)
        if component is None
        or doc["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
    ]
    if len(found) != 1:
        raise AssertionError(f"expected one {kind} {component or ''}, found {len(found)}")
    return found[0]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return workload["spec"]["template"]["spec"]["containers"]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


# --- schema validation -------------------------------------------------------


def validate_schemas(docs: list[dict[str, Any]], version: str) -> None:
    problems = []
    for doc in docs:
        name = f"{doc.get('kind')}/{doc['metadata'].get('name')}"
        schema_file = CRD_SCHEMAS / crd_schema_name(doc)
        try:
            if doc.get("apiVersion", "").startswith("monitoring.coreos.com/"):
                if not schema_file.is_file():
                    raise AssertionError(f"no schema {schema_file.name} for {name}")
                schema = json.loads(schema_file.read_text())
                crd_doc = copy.deepcopy(doc)
                jsonschema.validate(crd_doc, schema)
            else:
                kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{name}: no Kubernetes {version} schema for {doc.get('apiVersion')}")
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as error:
            message = getattr(error, "message", str(error)).splitlines()[0]
            where = "/".join(str(part) for part in getattr(error, "path", []))
            problems.append(f"{name}: {message} (at {where or 'top level'})")
    if problems:
        raise AssertionError("\n".join(problems))


def crd_schema_name(doc: dict[str, Any]) -> str:
    group, _, version = doc.get("apiVersion", "").rpartition("/")
    return f"{doc.get('kind', '').lower()}.{group}.{version}.json"


# --- the chart's promises ----------------------------------------------------


def registered_env_names() -> set[str]:
    text = ENV_REGISTRY.read_text()
    names = set(re.findall(r"^\s*([A-Z][A-Z0-9_]+)\s*=\s*\"", text, flags=re.MULTILINE))
    if len(names) < 20:
        raise AssertionError(f"found only {len(names)} variables in {ENV_REGISTRY}: parser out of date?")
    return names


def check_env_names(docs: list[dict[str, Any]]) -> None:
    known = registered_env_names()
    unknown = set()
    for workload in by_kind(docs, "Deployment") + by_kind(docs, "DaemonSet"):
        for container in containers(workload):
            for name in env_of(container):
                if name not in known and name not in NON_CODEBOX_ENV:
                    unknown.add(f"{workload['kind']}/{container['name']}: {name}")
    if unknown:
        raise AssertionError(f"variables codebox does not read: {sorted(unknown)}")


def check_secrets_from_secret_objects(docs: list[dict[str, Any]]) -> None:
    for workload in by_kind(docs, "Deployment") + by_kind(docs, "DaemonSet"):
        for container in containers(workload):
            for name, entry in env_of(container).items():
                if name in SECRET_KEYS:
                    ref = entry.get("valueFrom", {}).get("secretKeyRef")
                    if "value" in entry or not ref:
                        raise AssertionError(f"{workload['kind']} {name} is not from a Secret")
                    if ref["key"] != name:
                        raise AssertionError(f"{name} reads key {ref['key']}")


def check_api_deployment(docs: list[dict[str, Any]]) -> None:
    api = one(docs, "Deployment", "api")
    spec = api["spec"]
    assert spec["replicas"] == 3, f"replicas {spec['replicas']}"
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["serve", "--role", "api"], container["args"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"].get(kind, {})), f"resources.{kind}"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False
    env = env_of(container)
    assert env["CODEBOX_ROLE"]["value"] == "api"
    required = {"DATABASE_URL", "API_KEY_SECRET", "JWT_SECRET", "CODEBOX_NODE_SECRET"}
    missing = required - set(env)
    assert not missing, f"API lacks {missing}"
    for name in required:
        assert not env[name]["valueFrom"]["secretKeyRef"].get("optional"), f"{name} optional"


def check_node_daemonset(docs: list[dict[str, Any]]) -> None:
    node = one(docs, "DaemonSet", "node")
    pod = node["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        assert pod.get(flag) is False, f"{flag} must be false"
    assert pod["automountServiceAccountToken"] is False
    env = env_of(container)
    leaked = NODE_FORBIDDEN_SECRETS & set(env)
    assert not leaked, f"a node must not see {leaked}"
    for name in ("DATABASE_URL", "CODEBOX_NODE_SECRET", "CODEBOX_NODE_ID", "CODEBOX_NODE_ADVERTISE"):
        assert name in env, f"node lacks {name}"
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    host_paths = [volume for volume in volumes.values() if "hostPath" in volume]
    assert [volume["name"] for volume in host_paths] == ["data"], "only the data dir is a hostPath"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def check_network_policies(docs: list[dict[str, Any]], with_nodes: bool) -> None:
    policies = by_kind(docs, "NetworkPolicy")
    assert len(policies) == (2 if with_nodes else 1), f"{len(policies)} NetworkPolicies"
    for policy in policies:
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"], policy["metadata"]["name"]
    api = one(policies, "NetworkPolicy", "api")
    ports = {str(port["port"]) for rule in api["spec"]["ingress"] for port in rule["ports"]}
    assert ports == {"http", "metrics"}, f"API ingress ports {ports}"
    if with_nodes:
        node = one(policies, "NetworkPolicy", "node")
        (rule,) = node["spec"]["ingress"]
        (peer,) = rule["from"]
        component = peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        assert component == "api", "only API pods may reach a node"
        egress_ports = {port["port"] for rule in node["spec"]["egress"] for port in rule["ports"]}
        assert egress_ports == {5432, 53}, f"node egress ports {egress_ports}"


def check_prometheus_rule(docs: list[dict[str, Any]], promtool: Path, workdir: Path) -> None:
    rule = one(docs, "PrometheusRule")
    source = yaml.safe_load(ALERTS.read_text())
    if rule["spec"] != source:
        raise AssertionError("the PrometheusRule's spec differs from deploy/prometheus/alerts.yml")
    rendered = workdir / "prometheusrule-spec.yml"
    rendered.write_text(yaml.safe_dump(rule["spec"]))
    run([str(promtool), "check", "rules", str(rendered)])


def check_dashboard_configmap(docs: list[dict[str, Any]]) -> None:
    config_maps = [doc for doc in by_kind(docs, "ConfigMap") if "codebox.json" in doc.get("data", {})]
    assert len(config_maps) == 1, "one dashboard ConfigMap"
    embedded = json.loads(config_maps[0]["data"]["codebox.json"])
    assert embedded == json.loads(DASHBOARD.read_text()), "dashboard ConfigMap differs from deploy/grafana/codebox.json"


def check_config_accepted(docs: list[dict[str, Any]], codebox: Path | None, workdir: Path) -> None:
    config_map = [doc for doc in by_kind(docs, "ConfigMap") if "codebox.yaml" in doc.get("data", {})]
    assert len(config_map) == 1, "one config ConfigMap"
    path = workdir / "codebox.yaml"
    path.write_text(config_map[0]["data"]["codebox.yaml"])
    if codebox is None:
        raise AssertionError("no codebox binary given (--codebox)")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CODEBOX_CONFIG": str(path)}
    printed = run([str(codebox), "config", "print"], env=env)
    effective = yaml.safe_load(printed)
    wanted = yaml.safe_load(path.read_text())
    assert_subset(wanted, effective, "config")


def assert_subset(wanted: Any, actual: Any, where: str) -> None:
    if isinstance(wanted, dict):
        if not isinstance(actual, dict):
            raise AssertionError(f"{where}: expected a mapping, codebox has {actual!r}")
        for key, value in wanted.items():
            assert_subset(value, actual.get(key), f"{where}.{key}")
    elif wanted != actual:
        raise AssertionError(f"{where}: chart sets {wanted!r}, codebox reads {actual!r}")


def check_guard(values: dict[str, Any], message: str) -> None:
    try:
        render(values)
    except helm.HelmError as error:
        if message not in str(error):
            raise AssertionError(f"refused, but not with {message!r}: {error}") from error
        return
    raise AssertionError(f"rendered although it must refuse: {message!r}")


def run(command: list[str], env: dict[str, str] | None = None) -> str:
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return result.stdout


# --- metrics -----------------------------------------------------------------

PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
    "unless", "bool", "offset", "inf", "nan", "atan2", "start", "end",
}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (not functions, labels or keywords)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )
    names = set()
    for match in re.finditer(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)", text):
        name = match.group(1)
        following = text[match.end():].lstrip()
        if following.startswith("(") or name.lower() in PROMQL_KEYWORDS:
            continue
        names.add(name)
    return names


def exported_metric_names(exposition: str) -> set[str]:
    """Sample names a /metrics text exports, including families with no sample yet."""
    suffixes = {
        "counter": ["_total", "_created"],
        "histogram": ["_bucket", "_sum", "_count", "_created"],
        "gaugehistogram": ["_bucket", "_gsum", "_gcount"],
        "summary": ["", "_sum", "_count", "_created"],
        "info": ["_info"],
        "stateset": [""],
        "gauge": [""],
        "unknown": [""],
        "untyped": [""],
    }
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(maxsplit=3)
            names.update(family + suffix for suffix in suffixes.get(kind.strip(), [""]))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def alert_expressions() -> dict[str, str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {
        f"alert {rule.get('alert') or rule.get('record')}": str(rule["expr"])
        for group in groups
        for rule in group["rules"]
    }


def dashboard_expressions() -> dict[str, str]:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = {}

    def visit(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    expressions[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
            visit(panel.get("panels", []))

    visit(dashboard["panels"])
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if isinstance(query, str) and variable.get("type") == "query":
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", query.strip())
            expressions[f"variable {variable['name']}"] = inner.group(1) if inner else query
    return expressions


def check_metrics(exposition_files: list[Path]) -> None:
    exported: set[str] = set()
    for path in exposition_files:
        exported |= exported_metric_names(path.read_text())
    if not exported:
        raise AssertionError("no metric in the scraped /metrics text")
    expressions = {**alert_expressions(), **dashboard_expressions()}
    missing = []
    used = set()
    for where, expr in expressions.items():
        names = promql_metric_names(expr)
        if not names:
            missing.append(f"{where}: selects no metric ({expr})")
        used |= names
        missing += [f"{where}: {name}" for name in sorted(names - exported)]
    if missing:
        raise AssertionError("not exported by codebox:\n" + "\n".join(missing))
    print(f"     {len(expressions)} expressions use {len(used)} metrics: {', '.join(sorted(used))}")


def check_metric_parser() -> None:
    """The name extraction itself, on cases that would fool a naive one."""
    cases = {
        'sum(rate(http_requests_total{status=~"5..", route!="a{b}"}[5m])) > 0.1': {"http_requests_total"},
        "histogram_quantile(0.95, sum by (le) (rate(x_bucket[$__rate_interval])))": {"x_bucket"},
        "sum(up) or vector(0)": {"up"},
        "a_total / ignoring(reason) group_left b_total offset 5m": {"a_total", "b_total"},
    }
    for expr, expected in cases.items():
        got = promql_metric_names(expr)
        assert got == expected, f"{expr!r}: {got} != {expected}"
    exposition = "# TYPE c counter\n# TYPE h histogram\n# TYPE g gauge\ng 1\nc_total 2\n# EOF\n"
    got = exported_metric_names(exposition)
    assert {"c_total", "h_bucket", "h_count", "g"} <= got and "c" not in got, got


# --- main --------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--promtool", type=Path, required=True)
    parser.add_argument("--codebox", type=Path, help="codebox binary, for `config print`")
    parser.add_argument(
        "--metrics", type=Path, action="append", default=[],
        help="a /metrics text scraped from a running codebox (repeatable)",
    )
    parser.add_argument("--out", type=Path, help="write the rendered manifests here")
    args = parser.parse_args()

    report = Report()
    workdir = Path(tempfile.mkdtemp(prefix="check-deploy-"))
    rendered: dict[str, list[dict[str, Any]]] = {}

    def lint() -> None:
        for name, values in SCENARIOS.items():
            result = helm.lint(CHART, values, strict=True, kube_version="v" + KUBERNETES_VERSIONS[0])
            errors = result["errors"] + [
                f"{m['path']}: {m['error']}" for m in result["messages"] if m["severity"] >= 2
            ]
            if errors:
                raise AssertionError(f"{name}: " + "\n".join(errors))

    report.check("helm lint --strict (every value set)", lint)

    for name, values in SCENARIOS.items():
        def render_scenario(name: str = name, values: dict[str, Any] = values) -> None:
            output = render(values)
            rendered[name] = documents(output)
            if args.out:
                target = args.out / name
                target.mkdir(parents=True, exist_ok=True)
                for path, text in output.items():
                    (target / Path(path).name).write_text(text)

        report.check(f"render {name}", render_scenario)

    for name, docs in rendered.items():
        kinds = ", ".join(sorted({doc["kind"] for doc in docs}))
        print(f"     {name}: {len(docs)} manifests ({kinds})")
        for version in KUBERNETES_VERSIONS:
            report.check(
                f"{name}: every manifest valid for Kubernetes {version}",
                lambda docs=docs, version=version: validate_schemas(docs, version),
            )
        report.check(f"{name}: env names are codebox's", lambda docs=docs: check_env_names(docs))
        report.check(
            f"{name}: secrets only from Secret objects",
            lambda docs=docs: check_secrets_from_secret_objects(docs),
        )
        report.check(f"{name}: API Deployment", lambda docs=docs: check_api_deployment(docs))
        with_nodes = bool(by_kind(docs, "DaemonSet"))
        if with_nodes:
            report.check(f"{name}: node DaemonSet", lambda docs=docs: check_node_daemonset(docs))
        if by_kind(docs, "NetworkPolicy"):
            report.check(
                f"{name}: NetworkPolicies",
                lambda docs=docs, with_nodes=with_nodes: check_network_policies(docs, with_nodes),
            )
        report.check(
            f"{name}: codebox accepts the chart's config file",
            lambda docs=docs: check_config_accepted(docs, args.codebox, workdir),
        )

    if "full" in rendered:
        full = rendered["full"]
        report.check(
            "full: PrometheusRule is alerts.yml and promtool accepts it",
            lambda: check_prometheus_rule(full, args.promtool, workdir),
        )
        report.check("full: dashboard ConfigMap is codebox.json", lambda: check_dashboard_configmap(full))
    if "defaults" in rendered:
        defaults = rendered["defaults"]
        report.check(
            "defaults: no Secret, Ingress, ServiceMonitor or PrometheusRule",
            lambda: [
                assert_absent(defaults, kind)
                for kind in ("Secret", "Ingress", "ServiceMonitor", "PrometheusRule")
            ],
        )

    report.check(
        "guard: metrics.port must equal config.monitoring.metrics_port",
        lambda: check_guard({"metrics": {"port": 9999}}, "must equal config.monitoring.metrics_port"),
    )
    report.check(
        "guard: secret.create needs the required secrets",
        lambda: check_guard({"secret": {"create": True}}, "secret.values.DATABASE_URL is required"),
    )
    report.check(
        "guard: values.schema.json refuses a misspelt key",
        lambda: check_guard({"ingres": {"enabled": True}}, "additional properties 'ingres' not allowed"),
    )
    report.check("metric name extraction", check_metric_parser)
    report.check(
        "every metric of alerts.yml and codebox.json is exported",
        lambda: check_metrics(args.metrics),
    )

    print(f"check-deploy: {report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0


def assert_absent(docs: list[dict[str, Any]], kind: str) -> None:
    if by_kind(docs, kind):
        raise AssertionError(f"{kind} rendered with default values")


if __name__ == "__main__":
    sys.exit(main())
