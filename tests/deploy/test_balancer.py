"""The compose load balancer, for real: Debian's nginx on loopback with deploy/nginx/nginx.conf
in front of three service processes."""

import asyncio
import re
import shutil
import subprocess
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from servers import free_port, running_server, until

ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def loopback_config(template: str, listen: int, replicas: list[str], workdir: Path) -> str:
    """The compose config with only what differs on loopback replaced: replica addresses, port, paths."""
    servers = "".join(f"        server {r} max_fails=1 fail_timeout=5s;\n" for r in replicas)
    config, count = re.subn(r"        server replica:8000 [^\n]*\n", servers, template)
    assert count == 1
    config = config.replace("listen 80;", f"listen 127.0.0.1:{listen};")
    config = config.replace("pid /tmp/nginx.pid;", f"pid {workdir}/nginx.pid;\nerror_log {workdir}/error.log;")
    temp = "".join(
        f"    {name}_temp_path {workdir}/{name};\n" for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return config.replace("http {\n", "http {\n" + temp, 1)


@pytest.fixture
def balanced(shipped_model, tmp_path):
    if NGINX is None:
        pytest.skip("nginx is not installed: apt-get install nginx-light (CI installs it)")
    with ExitStack() as stack:
        replicas = [stack.enter_context(running_server(shipped_model, log_format="text")) for _ in range(3)]
        port = free_port()
        config = loopback_config(
            (ROOT / "deploy/nginx/nginx.conf").read_text(),
            port,
            [base.removeprefix("http://") for base, _ in replicas],
            tmp_path,
        )
        (tmp_path / "nginx.conf").write_text(config)
        process = subprocess.Popen(
            [NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-g", "daemon off;"]
        )
        stack.callback(lambda: (process.terminate(), process.wait(timeout=10)))
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                asyncio.run(asyncio.sleep(0.1))
        yield base, replicas


def test_requests_spread_over_replicas(balanced):
    base, replicas = balanced
    upstreams = Counter(httpx.get(f"{base}/healthz").headers["x-upstream"] for _ in range(30))
    assert len(upstreams) == 3 and min(upstreams.values()) >= 5, upstreams


def test_killing_a_replica_mid_load_fails_no_request(balanced):
    base, replicas = balanced
    body = {"images": [[0.0] * 784], "num_samples": 300, "adaptive": False}

    async def load():
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            outcomes = Counter()

            async def worker(w):
                for i in range(25):
                    try:
                        response = await http.post("/v1/log-likelihood", json={**body, "seed": w * 100 + i})
                        ok = response.status_code == 200 and len(response.json()["results"]) == 1
                        outcomes["ok" if ok else f"status {response.status_code}"] += 1
                    except httpx.HTTPError as error:
                        outcomes[type(error).__name__] += 1

            async def kill_one():
                await until(lambda: outcomes.total() >= 40)  # mid load: 40 of the 200 answered
                replicas[0][1].kill()  # no graceful shutdown: connections drop mid-request
                return outcomes.total()

            *_, answered = await asyncio.gather(*(worker(w) for w in range(8)), kill_one())
            return outcomes, answered

    outcomes, answered_before_kill = asyncio.run(load())
    assert replicas[0][1].poll() is not None and answered_before_kill < 100  # most of the load came after
    assert outcomes == Counter({"ok": 200}), outcomes
