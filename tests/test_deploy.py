"""docker-compose.yml and deploy/: the services the README's "Running at scale" describes, wired to one another,
and no secret written in them. Read with PyYAML (the Docker engine is not needed, nor run, here)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
NGINX = ROOT / "deploy" / "nginx.conf"
SECRET_NAMES = re.compile(r"TOKEN|SECRET|PASSWORD", re.IGNORECASE)
# A compose interpolation of a variable, the only way a secret may appear: ${NAME}, ${NAME:?why}, ${NAME:-x}.
INTERPOLATED = re.compile(r"^\$\{[A-Z0-9_]+(:?[?-][^}]*)?\}$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    found = compose["services"][name]
    assert isinstance(found, dict)
    return found


def environment(compose: dict[str, Any], name: str) -> dict[str, str]:
    env = service(compose, name).get("environment") or {}
    assert isinstance(env, dict), f"{name}: environment as a mapping"
    return {str(k): str(v) for k, v in env.items()}


def replicas(compose: dict[str, Any], name: str) -> int:
    return int(service(compose, name).get("deploy", {}).get("replicas", 1))


def test_every_part_is_a_service_running_its_command(compose: dict[str, Any]) -> None:
    commands = {name: (svc.get("command") or [None])[0] for name, svc in compose["services"].items()}
    assert commands == {
        "postgres": None, "nginx": None, "localnemo": "serve-local", "render-worker": "render-worker",
        "telegram": "telegram", "worker": "worker", "discord": "discord",
    }
    assert (replicas(compose, "telegram"), replicas(compose, "render-worker")) == (2, 2)
    assert (replicas(compose, "discord"), replicas(compose, "worker")) == (1, 1)
    for name in ("localnemo", "render-worker", "telegram", "worker", "discord"):
        assert service(compose, name)["build"] == ".", name  # the repository's Dockerfile


def test_nginx_round_robins_over_the_webhook_receivers(compose: dict[str, Any]) -> None:
    nginx = service(compose, "nginx")
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    conf = NGINX.read_text()
    upstream = re.search(r"upstream (\w+) \{(.*?)\}", conf, re.S)
    assert upstream is not None
    name, body = upstream.groups()
    servers = re.findall(r"^\s*server ([\w.-]+):(\d+)", body, re.M)
    receivers = environment(compose, "telegram")
    # The receivers' service name: Docker's DNS gives one address per replica, each a round-robin server.
    assert servers == [("telegram", receivers["TELEGRAM_WEBHOOK_PORT"])]
    assert not re.search(r"^\s*(ip_hash|hash|least_conn|random)\b", body, re.M)  # plain round robin
    assert f"proxy_pass http://{name};" in conf
    assert receivers["TELEGRAM_WEBHOOK_LISTEN"] == "0.0.0.0"
    assert receivers["TELEGRAM_WEBHOOK_PORT"] in service(compose, "telegram")["expose"]
    # Webhook mode: without a URL the receivers would all poll, and Telegram allows one poller per token.
    assert receivers["TELEGRAM_WEBHOOK_URL"].startswith("${TELEGRAM_WEBHOOK_URL:?")


def test_bot_processes_share_postgresql_and_localnemo(compose: dict[str, Any]) -> None:
    for name in ("telegram", "worker", "discord"):
        env = environment(compose, name)
        assert re.fullmatch(r"postgresql://nemobot:\$\{POSTGRES_PASSWORD:\?[^}]*\}@postgres:5432/nemobot",
                            env["NEMOBOT_DB"]), name
        assert env["NEMO_API_BASE"] == "${NEMO_API_BASE:-http://localnemo:8765}", name
        assert service(compose, name)["depends_on"]["postgres"]["condition"] == "service_healthy", name
    assert service(compose, "localnemo")["command"][1:] == ["--host", "0.0.0.0", "--port", "8765"]
    init = (ROOT / "deploy" / "postgres-init.sql").read_text()
    assert "CREATE DATABASE localnemo" in init
    assert any(v.endswith(":/docker-entrypoint-initdb.d/10-localnemo.sql:ro")
               for v in service(compose, "postgres")["volumes"])


def test_localnemo_and_its_render_workers_share_the_queue_and_the_media(compose: dict[str, Any]) -> None:
    server, worker = environment(compose, "localnemo"), environment(compose, "render-worker")
    assert server["LOCALNEMO_QUEUE_DB"] == worker["LOCALNEMO_QUEUE_DB"]
    assert worker["LOCALNEMO_QUEUE_DB"].endswith("@postgres:5432/localnemo")
    shared = worker["LOCALNEMO_SHARED_DIR"]
    assert server["LOCALNEMO_SHARED_DIR"] == shared
    for name in ("localnemo", "render-worker"):
        assert f"media:{shared}" in service(compose, name)["volumes"], name
    assert "media" in compose["volumes"]
    # The image makes the folder, owned by its user, so a new named volume mounted there is writable.
    assert "/shared" in (ROOT / "Dockerfile").read_text()


def _settings(value: Any, where: str) -> list[tuple[str, str, str]]:
    """Every (place, name, value) of an environment mapping anywhere in the file."""
    found: list[tuple[str, str, str]] = []
    if isinstance(value, dict):
        for key, inner in value.items():
            if isinstance(inner, str | int | float) and str(key).isupper():
                found.append((where, str(key), str(inner)))
            found += _settings(inner, f"{where}.{key}")
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            found += _settings(inner, f"{where}[{i}]")
    return found


def test_no_secret_is_written_in_the_files(compose: dict[str, Any]) -> None:
    settings = _settings(compose, "compose")
    assert len(settings) >= 10
    for where, name, value in settings:
        if SECRET_NAMES.search(name):
            assert INTERPOLATED.match(value), f"{where}.{name} holds a value, not ${{…}}: {value!r}"
        for password in re.findall(r"://[^:/@]+:([^@]+)@", value):
            assert INTERPOLATED.match(password), f"{where}.{name}: a password written in a URL"
    # Tokens come from .env, which is neither in git nor in the image.
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in (ROOT / ".dockerignore").read_text().splitlines()
    example = (ROOT / "deploy" / "env.example").read_text()
    for line in example.splitlines():
        name, _, value = line.partition("=")
        if not line.startswith("#") and SECRET_NAMES.search(name):
            assert value == "", f"deploy/env.example gives {name} a value"
