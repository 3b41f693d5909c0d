"""deploy/compose: ports on loopback by default, Grafana's admin password from the environment,
and the TLS + token override (docker-compose.tls.yml) run for real: its VARFX_* settings, with
the secret paths pointed at certificates made in the test, start a server that speaks TLS,
wants a token, and answers the override's health check command on the plaintext health port."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from tests.deploy._stack import COMPOSE
from tests.tls_certs import make_pki

_VAR = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")


class Unset(KeyError):
    """A ``${VAR:?message}`` whose variable is not set."""


def expand(text: str, env: dict[str, str]) -> str:
    """Compose interpolation of ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}``."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.groups()
        value = env.get(name, "")
        if value:
            return value
        if op == "?":
            raise Unset(f"{name}: {arg}")
        return arg if op == "-" else ""

    return _VAR.sub(one, text)


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((COMPOSE / name).read_text())
    return data


def test_every_port_is_published_on_loopback_by_default() -> None:
    services = _load("docker-compose.yml")["services"]
    published = []
    for name, service in services.items():
        for spec in service.get("ports", []):
            host, _host_port, _container_port = expand(str(spec), {}).split(":")
            assert host == "127.0.0.1", (name, spec)
            published.append(name)
    assert set(published) == {"varfx", "prometheus", "grafana"}
    # the gRPC port can be published elsewhere on purpose, and only it
    (grpc_port, *_rest) = services["varfx"]["ports"]
    assert expand(grpc_port, {"VARFX_PUBLISH_HOST": "0.0.0.0"}).startswith("0.0.0.0:")


def test_grafana_admin_password_comes_from_the_environment() -> None:
    env = _load("docker-compose.yml")["services"]["grafana"]["environment"]
    value = env["GF_SECURITY_ADMIN_PASSWORD"]
    with pytest.raises(Unset, match="GRAFANA_ADMIN_PASSWORD"):
        expand(value, {})  # no default password: compose refuses to start without one
    assert expand(value, {"GRAFANA_ADMIN_PASSWORD": "s3cret"}) == "s3cret"
    assert "admin" not in value.split(":?")[0]


def _tls_settings() -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
    base = _load("docker-compose.yml")
    override = _load("docker-compose.tls.yml")
    env = {
        **base["services"]["varfx"]["environment"],
        **override["services"]["varfx"]["environment"],
    }
    env = {k: expand(str(v), {"VARFX_GENOME": ""}) for k, v in env.items()}
    return env, override["services"]["varfx"], override["secrets"]


def test_tls_override_takes_every_file_from_a_secret() -> None:
    from varfx.server.config import load_config
    from varfx.server.tls import security_warnings

    env, service, secrets = _tls_settings()
    config = load_config(environ={**env, "VARFX_HOST": "0.0.0.0"})  # the image's VARFX_HOST
    assert security_warnings(config) == []  # TLS and tokens on an exposed port
    for key in ("VARFX_TLS_CERT", "VARFX_TLS_KEY", "VARFX_AUTH_TOKENS_FILE"):
        path = Path(env[key])
        assert path.parent == Path("/run/secrets"), key
        assert path.name in service["secrets"], key
        assert expand(secrets[path.name]["file"], {}).startswith("./tls/"), key
    command = service["healthcheck"]["test"]
    assert command[:4] == ["CMD", "varfx", "health", "--server"]
    assert command[4] == f"127.0.0.1:{config.health_port}"


def test_tls_override_runs(tmp_path: Path, model_repo: Path) -> None:
    """The override's settings with its secret paths pointed at real files start a server:
    TLS + token work, no token is refused, the health check command exits 0 in plaintext."""
    from varfx.client import Client
    from varfx.client.errors import VarfxError
    from varfx.server import start_in_thread
    from varfx.server.config import load_config

    pki = make_pki(tmp_path / "tls")
    tokens = tmp_path / "tls" / "tokens"
    tokens.write_text("compose-token\n")
    tokens.chmod(0o600)
    files = {"varfx_tls_cert": pki.server_cert, "varfx_tls_key": pki.server_key}
    files["varfx_tokens"] = tokens
    env, service, _secrets = _tls_settings()
    for key, value in env.items():
        if value.startswith("/run/secrets/"):
            env[key] = str(files[Path(value).name])
    env |= {"VARFX_MODEL_REPO": str(model_repo), "VARFX_HOST": "127.0.0.1", "VARFX_PORT": "0"}
    env |= {"VARFX_METRICS_PORT": "-1", "VARFX_HEALTH_PORT": "0", "VARFX_WARMUP_BATCH_SIZES": "1"}
    env |= {"VARFX_MAX_BATCH": "8"}
    with start_in_thread(load_config(environ=env)) as running:
        target = f"localhost:{running.port}"
        with Client(target, root_certificates=pki.ca, token="compose-token") as client:
            assert {m.name for m in client.list_models()} == {"tok", "agct"}
        with Client(target, root_certificates=pki.ca) as client, pytest.raises(VarfxError) as e:
            client.list_models()
        assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert running.handle is not None
        assert running.handle.health_port is not None
        command = service["healthcheck"]["test"][1:]
        command[3] = f"127.0.0.1:{running.handle.health_port.port}"
        clean = {k: v for k, v in os.environ.items() if not k.startswith("VARFX_")}
        result = subprocess.run(
            [sys.executable, "-m", *command],
            capture_output=True,
            text=True,
            timeout=60,
            env=clean,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SERVING" in result.stdout
