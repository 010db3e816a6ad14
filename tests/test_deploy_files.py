"""The deployment files, checked without a container engine: compose.yaml, the Dockerfile, the
Kubernetes manifests, Prometheus and Grafana. Services, images, settings, health checks and probes
must be there and agree with each other and with the code; every file they name must exist."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from actors.bus import QUEUES

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "docs" / "deploy"
RESIMHUB_SERVICES = ("migrate", "gateway", "relay")
#: Gauges the gateway reports only once there is something to average (see tests/api/test_metrics.py).
CONDITIONAL = {"resimhub_training_env_steps_per_second", "resimhub_evaluation_policy_latency_seconds",
               "resimhub_evaluation_env_steps_per_second", "resimhub_evaluation_duration_seconds"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _workers(services: dict) -> dict:
    return {name: svc for name, svc in services.items() if name.startswith("worker")}


def _queues_of(command: list[str]) -> list[str]:
    return command[command.index("--queues") + 1:]


def _arg(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


# -- compose.yaml -------------------------------------------------------------------------------------
def test_compose_has_every_part(services):
    for name in ("postgres", "rabbitmq", "redis", "migrate", "gateway", "relay", "prometheus", "grafana"):
        assert name in services, name
    assert len(_workers(services)) >= 2
    assert "management" in services["rabbitmq"]["image"]
    for name, svc in services.items():
        image = svc["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag"


def test_every_long_running_service_has_a_healthcheck(services):
    for name, svc in services.items():
        if name == "migrate":
            assert svc["restart"] == "no" and svc["command"] == ["resimhub", "db", "upgrade"]
            continue
        check = svc.get("healthcheck", {})
        assert check.get("test") and check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert not check.get("disable"), name


def test_resimhub_services_share_one_image_settings_and_data(services):
    names = [*RESIMHUB_SERVICES, *_workers(services)]
    images = {services[n]["image"] for n in names}
    assert len(images) == 1
    for name in names:
        svc = services[name]
        assert svc["build"] == {"context": ".", "dockerfile": "docs/deploy/Dockerfile"}
        assert (ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
        env = svc["environment"]
        assert env["RESIMHUB_DATABASE_URL"].startswith("postgresql+psycopg2://") and "@postgres:5432/" in env[
            "RESIMHUB_DATABASE_URL"]
        assert env["RESIMHUB_BROKER_URL"].startswith("amqp://") and "@rabbitmq:5672/" in env["RESIMHUB_BROKER_URL"]
        assert env["RESIMHUB_REDIS_URL"].startswith("redis://redis:6379/")
        assert env["RESIMHUB_LOG_FORMAT"] == "json"
        assert f"resimhub-data:{env['RESIMHUB_DATA_DIR']}" in svc["volumes"], name
        if name != "migrate":
            deps = svc["depends_on"]
            assert deps["migrate"]["condition"] == "service_completed_successfully", name
            assert all(deps[d]["condition"] == "service_healthy" for d in ("postgres", "rabbitmq", "redis")), name


def test_compose_settings_parse(services):
    """Every RESIMHUB_* value in compose is one the hub accepts (with ${VAR:-default} resolved)."""
    from storage.settings import load_settings

    for name in [*RESIMHUB_SERVICES, *_workers(services)]:
        env = {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v))
               for k, v in services[name]["environment"].items()}
        settings = load_settings(env)
        assert settings.broker_url and settings.redis_url and not settings.is_sqlite
        assert settings.worker_metrics == name.startswith("worker"), name


def test_every_variable_has_a_default():
    text = (ROOT / "compose.yaml").read_text()
    bare = re.findall(r"\$\{([A-Za-z_]+)\}", text)
    assert bare == [], f"give these a default (${{VAR:-…}}) so compose works without an .env: {bare}"


def test_gateway_listens_off_loopback_on_its_published_port(services):
    gateway = services["gateway"]
    command = gateway["command"]
    assert command[:2] == ["resimhub", "api"] and _arg(command, "--host") == "0.0.0.0"
    port = _arg(command, "--port")
    assert any(str(p).endswith(f":{port}") for p in gateway["ports"])
    assert f"127.0.0.1:{port}/health" in " ".join(gateway["healthcheck"]["test"])


def test_workers_cover_every_queue_and_export_metrics(services):
    covered = []
    for name, svc in _workers(services).items():
        command = svc["command"]
        assert command[:2] == ["resimhub", "worker"], name
        covered += _queues_of(command)
        env = svc["environment"]
        assert env["RESIMHUB_WORKER_METRICS"] == "1" and env["dramatiq_prom_db"].startswith("/tmp/")
        assert f"127.0.0.1:{env['dramatiq_prom_port']}/" in " ".join(svc["healthcheck"]["test"])
    assert sorted(covered) == sorted(QUEUES), "each queue needs exactly one worker service"
    for name in ("gateway", "relay", "migrate"):
        assert "RESIMHUB_WORKER_METRICS" not in services[name]["environment"], name
    assert "replicas" in services["worker-training"].get("deploy", {})  # the scaling example


def test_every_bind_mount_exists_and_named_volumes_are_declared(compose, services):
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source}"
            else:
                assert source in compose["volumes"], f"{name}: volume {source} is not declared"


def test_the_relay_healthcheck_command_works(services, tmp_path):
    test = services["relay"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    base = {"PATH": os.environ["PATH"], "RESIMHUB_DATA_DIR": str(tmp_path / "data")}
    ok = subprocess.run([sys.executable, *test[2:]], cwd=ROOT, env=base, capture_output=True, timeout=60)
    assert ok.returncode == 0, ok.stderr.decode()[-2000:]
    down = subprocess.run([sys.executable, *test[2:]], cwd=ROOT, capture_output=True, timeout=60,
                          env={**base, "RESIMHUB_DATABASE_URL": "postgresql+psycopg2://nobody@127.0.0.1:1/x"})
    assert down.returncode == 1


# -- Dockerfile ---------------------------------------------------------------------------------------
def _dockerfile() -> list[str]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck():
    lines = _dockerfile()
    stages = [line for line in lines if line.upper().startswith("FROM ")]
    assert len(stages) >= 2
    stage_names = [line.split()[-1] for line in stages if " AS " in line.upper()]
    final = lines[lines.index(stages[-1]):]
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert any(line.upper().startswith("HEALTHCHECK ") and "/health" in line for line in final)
    cmd = next(line for line in final if line.upper().startswith("CMD "))
    assert json.loads(cmd[4:])[:2] == ["resimhub", "api"]
    for line in lines:
        if line.upper().startswith("COPY --FROM="):
            assert line.split()[1].split("=")[1] in stage_names, line
        elif line.upper().startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: not in the build context"
    assert any("EXPOSE" in line and "8000" in line for line in final)


def test_dockerignore_keeps_what_the_dockerfile_copies():
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
    copied = {source.rstrip("/") for line in _dockerfile() if line.upper().startswith("COPY ")
              and "--from" not in line.lower() for source in line.split()[1:-1]}
    for source in copied:
        assert f"!{source}" in ignore or f"!{source}/**" in ignore, source


# -- Prometheus and Grafana ---------------------------------------------------------------------------
def _known_metrics(tmp_path) -> set[str]:
    """Sample-level names the hub and Dramatiq's middleware export (counters with ``_total``)."""
    from tests.support.hubs import running_hub, settings_for

    with running_hub(settings_for(tmp_path), worker=False) as hub:  # the relay boots the embedded broker
        hub.client.get("/health")
        text = hub.client.get("/metrics").text
    names = {f.name + ("_total" if f.type == "counter" else "") for f in text_string_to_metric_families(text)}
    import dramatiq.middleware.prometheus as dramatiq_prometheus

    names |= set(re.findall(r'"(dramatiq_[a-z_]+)"', Path(dramatiq_prometheus.__file__).read_text()))
    return names | CONDITIONAL


def _metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\b((?:resimhub|dramatiq)_[a-z0-9_]+)", expr))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


@pytest.fixture(scope="module")
def known(tmp_path_factory) -> set[str]:
    return _known_metrics(tmp_path_factory.mktemp("metrics"))


def test_prometheus_scrapes_the_gateway_and_every_worker(services):
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    gateway = jobs["resimhub-gateway"]
    assert gateway["metrics_path"] == "/metrics"
    gateway_port = int(_arg(services["gateway"]["command"], "--port"))
    assert gateway["dns_sd_configs"][0]["names"] == ["gateway"] and gateway["dns_sd_configs"][0]["port"] == gateway_port
    workers = jobs["resimhub-workers"]["dns_sd_configs"][0]
    assert sorted(workers["names"]) == sorted(_workers(services))
    assert all(str(workers["port"]) == svc["environment"]["dramatiq_prom_port"] for svc in _workers(services).values())
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                assert target.split(":")[0] in services, target
    prometheus = services["prometheus"]
    mounts = dict(v.split(":")[1::-1] for v in prometheus["volumes"] if v.startswith("./"))
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert mounts["/etc/prometheus/prometheus.yml"] == "./docs/deploy/prometheus.yml"
    for rule_file in config["rule_files"]:
        assert (ROOT / mounts[rule_file]).is_file(), rule_file


def test_alert_rules_use_metrics_that_exist(known):
    rules = yaml.safe_load((DEPLOY / "prometheus-rules.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert exprs
    for expr in exprs:
        assert _metric_names(expr) and _metric_names(expr) <= known, expr


def test_grafana_provisioning_matches_compose(services):
    grafana = services["grafana"]
    mounts = dict(v.split(":")[1::-1] for v in grafana["volumes"] if v.startswith("./"))
    provisioning = ROOT / mounts["/etc/grafana/provisioning"]
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert datasources[0]["type"] == "prometheus" and datasources[0]["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((provisioning / "dashboards" / "resimhub.yaml").read_text())["providers"]
    path = providers[0]["options"]["path"]
    assert path in mounts, "the dashboards provider must read the directory compose mounts"
    assert list((ROOT / mounts[path]).glob("*.json"))


def test_the_dashboard_has_panels_for_every_metric_family(known):
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "resimhub.json").read_text())
    uid = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text())[
        "datasources"][0]["uid"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    used = set()
    for panel in panels:
        assert panel["datasource"]["uid"] == uid and panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = _metric_names(target["expr"])
            assert names and names <= known, (panel["title"], names - known)
            used |= names
    wanted = {"resimhub_http_requests_total", "resimhub_http_request_duration_seconds", "resimhub_experiments",
              "resimhub_tasks_in_flight", "resimhub_training_env_steps_total", "resimhub_evaluation_episodes_total",
              "resimhub_evaluation_turnaround_seconds", "resimhub_evaluation_policy_latency_seconds",
              "resimhub_outbox_lag_seconds", "resimhub_webhook_deliveries", "resimhub_webhook_attempts_total",
              "resimhub_queue_messages", "dramatiq_messages_total", "dramatiq_message_duration_milliseconds"}
    assert wanted <= used, wanted - used


# -- Kubernetes ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def k8s() -> list[dict]:
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    on_disk = sorted(p.name for p in (DEPLOY / "k8s").glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk
    docs = []
    for name in listed:
        docs += [d for d in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()) if d]
    assert all(d["metadata"].get("namespace", kustomization["namespace"]) == kustomization["namespace"] for d in docs)
    return docs


def _by_kind(docs, kind) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _container(workload: dict) -> dict:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return container


def test_k8s_has_deployments_for_gateway_relay_and_workers(k8s):
    deployments = _by_kind(k8s, "Deployment")
    assert {"resimhub-gateway", "resimhub-relay"} <= set(deployments)
    workers = {n: d for n, d in deployments.items() if n.startswith("resimhub-worker-")}
    assert len(workers) >= 2
    covered = [q for d in workers.values() for q in _queues_of(_container(d)["command"])]
    assert sorted(covered) == sorted(QUEUES)
    jobs = _by_kind(k8s, "Job")
    assert any(_container(j)["command"] == ["resimhub", "db", "upgrade"] for j in jobs.values())


def test_k8s_gateway_probes_health_and_readiness(k8s):
    gateway = _by_kind(k8s, "Deployment")["resimhub-gateway"]
    container = _container(gateway)
    command = container["command"]
    assert command[:2] == ["resimhub", "api"] and _arg(command, "--host") == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == int(_arg(command, "--port"))
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in ports, probe
    service = _by_kind(k8s, "Service")["resimhub-gateway"]
    labels = gateway["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] in ports


def test_k8s_workers_and_relay_have_liveness_probes_and_worker_metrics(k8s):
    for name, deployment in _by_kind(k8s, "Deployment").items():
        container = _container(deployment)
        assert "livenessProbe" in container, name
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        if name.startswith("resimhub-worker-"):
            assert env["RESIMHUB_WORKER_METRICS"] == "1"
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert ports[container["livenessProbe"]["httpGet"]["port"]] == int(env["dramatiq_prom_port"])
            annotations = deployment["spec"]["template"]["metadata"]["annotations"]
            assert annotations["prometheus.io/port"] == env["dramatiq_prom_port"]
        else:
            assert "RESIMHUB_WORKER_METRICS" not in env, name


def test_k8s_pods_are_locked_down_and_reference_what_exists(k8s):
    config_maps, secrets = _by_kind(k8s, "ConfigMap"), _by_kind(k8s, "Secret")
    claims = _by_kind(k8s, "PersistentVolumeClaim")
    tag = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())["images"][0]["newTag"]
    workloads = [*_by_kind(k8s, "Deployment").values(), *_by_kind(k8s, "Job").values()]
    for workload in workloads:
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0, name
        container = _container(workload)
        assert container["image"] == f"resimhub:{tag}", name
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/tmp", "/data"} <= mounts, name  # writable scratch for metrics files; shared artifacts
        for source in container["envFrom"]:
            if "configMapRef" in source:
                assert source["configMapRef"]["name"] in config_maps, name
            else:
                assert source["secretRef"]["name"] in secrets, name
        for volume in pod["volumes"]:
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, name
    assert "ReadWriteMany" in claims["resimhub-data"]["spec"]["accessModes"]
    settings = {**next(iter(config_maps.values()))["data"], **next(iter(secrets.values()))["stringData"]}
    from storage.settings import load_settings

    parsed = load_settings(settings)
    assert parsed.broker_url and parsed.redis_url and not parsed.is_sqlite and parsed.log_format == "json"


def test_k8s_autoscales_workers_on_queue_depth(k8s):
    deployments = _by_kind(k8s, "Deployment")
    scaled = _by_kind(k8s, "ScaledObject")
    auths = _by_kind(k8s, "TriggerAuthentication")
    secrets = _by_kind(k8s, "Secret")
    assert any(name.endswith("training") for name in scaled)
    for name, obj in scaled.items():
        target = deployments[obj["spec"]["scaleTargetRef"]["name"]]
        queues = _queues_of(_container(target)["command"])
        (trigger,) = obj["spec"]["triggers"]
        assert trigger["type"] == "rabbitmq" and trigger["metadata"]["mode"] == "QueueLength"
        assert trigger["metadata"]["queueName"] in queues, name
        auth = auths[trigger["authenticationRef"]["name"]]
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["key"] in secrets[ref["name"]]["stringData"]
    for hpa in _by_kind(k8s, "HorizontalPodAutoscaler").values():
        assert hpa["spec"]["scaleTargetRef"]["name"] in deployments


# -- the operations guide -----------------------------------------------------------------------------
def test_operations_guide_documents_every_metric(known):
    guide = (ROOT / "docs" / "operations.md").read_text()
    ours = {n for n in known if n.startswith("resimhub_")}
    missing = {n for n in ours if re.sub(r"_total$", "", n) not in guide}
    assert not missing, f"docs/operations.md's metrics reference lacks {sorted(missing)}"
    for section in ("Scaling", "Backups", "Upgrades", "Metrics", "Security"):
        assert re.search(rf"^#+ .*{section}", guide, re.M | re.I), section
