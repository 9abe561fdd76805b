"""Compose, Kubernetes, nginx and the Dockerfile agree with the service's real settings and routes."""

import re
from pathlib import Path

import pytest

from service.app import create_app
from service.settings import Settings

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
SETTING_NAMES = {f"CVAE_{name.upper()}" for name in Settings.model_fields}
ROUTES = set(create_app(Settings()).openapi()["paths"])


def env_names(mapping) -> set[str]:
    if isinstance(mapping, dict):
        return set(mapping)
    return {item["name"] for item in mapping}


def test_compose_parses_and_uses_real_settings_ports_and_probes():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"cvae", "cvae-gpu", "replica", "balancer", "prometheus"} <= set(services)
    for name in ("cvae", "cvae-gpu", "replica"):
        service = services[name]
        env = service["environment"]
        assert env_names(env) <= SETTING_NAMES, env_names(env) - SETTING_NAMES
        assert int(env["CVAE_PORT"]) == 8000 and int(env["CVAE_GRPC_PORT"]) == 8001
        probe = " ".join(service["healthcheck"]["test"])
        assert "/readyz" in probe and ":8000/" in probe
    assert services["cvae"]["ports"] == ["8000:8000", "8002:8001"]
    assert services["cvae-gpu"]["ports"] == ["8001:8000", "8003:8001"]
    assert services["cvae-gpu"]["profiles"] == ["gpu"]
    assert services["cvae-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert services["cvae-gpu"]["build"]["target"] == "gpu"
    assert services["replica"]["deploy"]["replicas"] >= 2
    for mount in services["balancer"]["volumes"] + services["prometheus"]["volumes"]:
        assert (ROOT / mount.split(":")[0]).is_file(), mount


def test_kubernetes_manifests_parse_and_match_the_service():
    deployment = yaml.safe_load((ROOT / "deploy/k8s/deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert env_names(container["env"]) <= SETTING_NAMES
    port = next(e["value"] for e in container["env"] if e["name"] == "CVAE_PORT")
    assert container["ports"][0]["containerPort"] == int(port)
    grpc_port = next(e["value"] for e in container["env"] if e["name"] == "CVAE_GRPC_PORT")
    assert {"name": "grpc", "containerPort": int(grpc_port)} in container["ports"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz" and "/healthz" in ROUTES
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz" and "/readyz" in ROUTES
    assert container["resources"]["requests"]["cpu"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in ROUTES
    service = yaml.safe_load((ROOT / "deploy/k8s/service.yaml").read_text())
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {p["name"] for p in container["ports"]}
    hpa = yaml.safe_load((ROOT / "deploy/k8s/hpa.yaml").read_text())
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]


def test_dockerfile_uses_real_settings_and_the_readiness_route():
    text = (ROOT / "Dockerfile").read_text()
    names = set(re.findall(r"\b(CVAE_[A-Z_]+)=", text))
    assert names and names <= SETTING_NAMES, names - SETTING_NAMES
    assert re.search(r"^FROM .* AS runtime$", text, re.M) and re.search(r"^FROM .* AS gpu$", text, re.M)
    assert "USER cvae" in text and "/readyz" in text
    assert "pip install --no-cache-dir ." in text  # the base package only, as tests/deploy/test_runtime_install.py
    assert "COPY models /opt/cvae/models" in text and "CVAE_MODEL_REPOSITORY=/opt/cvae/models" in text


def test_prometheus_scrapes_the_metrics_route_of_every_replica():
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    job = config["scrape_configs"][0]
    assert job["metrics_path"] in ROUTES
    assert job["dns_sd_configs"][0]["names"] == ["replica"] and job["dns_sd_configs"][0]["port"] == 8000


def test_nginx_body_limit_matches_the_service_default():
    text = (ROOT / "deploy/nginx/nginx.conf").read_text()
    megabytes = int(re.search(r"client_max_body_size (\d+)m;", text).group(1))
    assert megabytes * 1_000_000 == Settings().max_body_bytes


def test_every_setting_is_in_the_readmes_settings_table():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| what | variables (defaults) |") :].split("\n\n")[0]
    assert {name for name in SETTING_NAMES if f"`{name}`" not in table} == set()
    assert len(SETTING_NAMES) <= 36
