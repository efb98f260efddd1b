"""deploy/compose.yaml: no container engine runs here, so its topology is checked as data
(nginx in front of two replicas, PostgreSQL, health checks, ports, mounts) and the
replicas' command is parsed by the real `rlchat serve` CLI, after the image's entrypoint."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
import typer.main
import yaml

from rlchat.cli import app

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
REPLICAS = ("rlchat-1", "rlchat-2")
PORT = 8000


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def dockerfile_instruction(name: str) -> list[str]:
    """The JSON (exec) form of a Dockerfile instruction, e.g. ENTRYPOINT."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    match = re.search(rf"^{name}\s+(\[.*\])\s*$", text, re.MULTILINE)
    assert match, f"no {name} in exec form in the Dockerfile"
    return json.loads(match.group(1))


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} and ${VAR:?message}, with every variable unset."""
    value = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)
    return re.sub(r"\$\{(\w+):\?[^}]*\}", r"<\1>", value)


def volume_mounts(service: dict) -> dict[str, tuple[str, str]]:
    """target -> (source, mode) of a service's short-syntax volumes."""
    mounts = {}
    for entry in service.get("volumes", []):
        source, target, *mode = interpolate(entry).split(":")
        mounts[target] = (source, mode[0] if mode else "rw")
    return mounts


def test_the_topology_is_nginx_two_replicas_and_postgres(services: dict) -> None:
    assert set(services) == {"nginx", "postgres", *REPLICAS}


def test_every_service_has_a_health_check(services: dict) -> None:
    for name, service in services.items():
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no health check"
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    for name in REPLICAS:
        assert f"127.0.0.1:{PORT}/readyz" in " ".join(services[name]["healthcheck"]["test"])


def test_start_order_waits_for_health(services: dict) -> None:
    for name in REPLICAS:
        assert services[name]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["nginx"]["depends_on"] == {
        name: {"condition": "service_healthy"} for name in REPLICAS
    }


def test_only_nginx_publishes_a_port_and_only_80(services: dict) -> None:
    published = {name: service.get("ports", []) for name, service in services.items()}
    assert published.pop("nginx") == ["80:80"]
    assert not any(published.values()), f"published besides nginx: {published}"


def test_nginx_mounts_the_repositorys_configuration(services: dict) -> None:
    mounts = volume_mounts(services["nginx"])
    assert set(mounts) == {"/etc/nginx/conf.d/default.conf", "/etc/nginx/rlchat-replicas.conf"}
    for target, (source, mode) in mounts.items():
        assert (DEPLOY / source).is_file(), f"{source} (mounted at {target}) is not in deploy/"
        assert mode == "ro"
    # The server block includes the upstream list by the name it is mounted under.
    server_block = (DEPLOY / mounts["/etc/nginx/conf.d/default.conf"][0]).read_text()
    assert "include rlchat-replicas.conf;" in server_block


def test_the_upstream_lists_exactly_the_replica_services() -> None:
    upstream = (DEPLOY / "nginx" / "replicas-compose.conf").read_text(encoding="utf-8")
    servers = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", upstream, re.MULTILINE)
    assert sorted(servers) == [(name, str(PORT)) for name in REPLICAS]


def test_replicas_share_the_models_read_only_and_postgres_keeps_a_volume(
    compose: dict, services: dict
) -> None:
    for name in REPLICAS:
        assert volume_mounts(services[name])["/models"][1] == "ro"
        assert services[name]["command"][0].startswith("/models/")
    assert volume_mounts(services["postgres"])["/var/lib/postgresql/data"][0] == "database"
    assert "database" in compose["volumes"]


def test_replicas_are_built_from_the_dockerfile(services: dict) -> None:
    for name in REPLICAS:
        build = services[name]["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == ROOT / "Dockerfile"


def test_replicas_reach_postgres_with_its_credentials(services: dict) -> None:
    postgres = services["postgres"]["environment"]
    for name in REPLICAS:
        url = interpolate(services[name]["environment"]["RLCHAT_DATABASE"])
        user, password, host, port, database = re.fullmatch(
            r"postgresql://(\w+):([^@]+)@([\w-]+):(\d+)/(\w+)", url
        ).groups()
        assert (user, database) == (postgres["POSTGRES_USER"], postgres["POSTGRES_DB"])
        assert password == interpolate(postgres["POSTGRES_PASSWORD"]) == "<POSTGRES_PASSWORD>"
        assert (host, port) == ("postgres", "5432")


def parse_serve(args: list[str]) -> click.Context:
    """Parse `rlchat <args>` as the real CLI does (types, required arguments, environment
    variables), without starting a server."""
    group = typer.main.get_command(app)
    parent = click.Context(group, info_name="rlchat")
    name, command, rest = group.resolve_command(parent, list(args))
    return command.make_context(name, rest, parent=parent)


def test_the_replicas_command_parses_with_the_real_cli(
    services: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    entrypoint = dockerfile_instruction("ENTRYPOINT")
    assert entrypoint[0] == "rlchat"
    for name in REPLICAS:
        service = services[name]
        for key, value in service["environment"].items():
            monkeypatch.setenv(key, interpolate(value))
        ctx = parse_serve([*entrypoint[1:], *(interpolate(arg) for arg in service["command"])])
        assert ctx.params["host"] == "0.0.0.0" and ctx.params["port"] == PORT
        # The variable is one the CLI reads: it lands in --database.
        assert ctx.params["database"] == interpolate(service["environment"]["RLCHAT_DATABASE"])


def test_the_images_default_command_parses_with_the_real_cli(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RLCHAT_DATABASE", raising=False)
    ctx = parse_serve([*dockerfile_instruction("ENTRYPOINT")[1:], *dockerfile_instruction("CMD")])
    assert ctx.params["host"] == "0.0.0.0" and ctx.params["port"] == PORT
    assert list(ctx.params["runs"]) == [Path("/models")]
