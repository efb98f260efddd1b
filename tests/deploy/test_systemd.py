"""deploy/systemd: the replica unit passes `systemd-analyze verify` and `security`, for real.

No running systemd is needed: `verify` loads unit files from disk, and `security --offline`
scores a unit file without asking PID 1. Each check is made on an instance as systemd would
load it, `rlchat@8001.service`, copied into a temporary directory with ExecStart pointed at
this checkout's `rlchat` (verify refuses a unit whose binary does not exist).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "deploy" / "systemd"
UNIT = SYSTEMD / "rlchat@.service"
TARGET = SYSTEMD / "rlchat.target"
ENV_FILE = SYSTEMD / "rlchat.env"
REPLICAS = ROOT / "deploy" / "nginx" / "replicas.conf"
INSTALLED_BINARY = "/opt/rlchat/venv/bin/rlchat"
# Exposure systemd-analyze scores the unit at, 0 (locked down) to 10 (no sandbox), times ten
# as --threshold takes it; the unit scores 1.1 with systemd 252. "OK" ends at 3.9.
MAX_EXPOSURE = 20

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze not installed: the systemd unit was not verified"
)

HARDENING = {
    "DynamicUser": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "NoNewPrivileges": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "CapabilityBoundingSet": "",
    "SystemCallFilter": "@system-service",
    "Restart": "on-failure",
    "EnvironmentFile": "/etc/rlchat/rlchat.env",
}


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections of a unit file: key -> every value it is given, in order."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        assert current is not None, f"{path}: {line!r} before any section"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def instance(tmp_path: Path, port: int = 8001, binary: str | None = None) -> Path:
    """rlchat@<port>.service in tmp_path as it would be installed, but running `binary`
    (this checkout's rlchat by default), with rlchat.target beside it."""
    binary = binary or str(Path(sys.executable).with_name("rlchat"))
    text = UNIT.read_text(encoding="utf-8")
    assert text.count(INSTALLED_BINARY) == 1, "ExecStart should run the venv's rlchat"
    path = tmp_path / f"rlchat@{port}.service"
    path.write_text(text.replace(INSTALLED_BINARY, binary), encoding="utf-8")
    shutil.copy(TARGET, tmp_path / TARGET.name)
    return path


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=60, check=False)


@needs_analyze
def test_verify_instance_is_clean(tmp_path):
    if not Path(sys.executable).with_name("rlchat").is_file():
        pytest.skip("no rlchat entry point beside the test's Python: install the package")
    unit = instance(tmp_path)
    result = analyze("verify", str(unit), str(tmp_path / TARGET.name))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Anything said about our units is a warning (an unknown key, a bad value, a missing
    # binary); what verify may say about the host's own units is not ours to judge.
    ours = [line for line in output.splitlines() if "rlchat" in line]
    assert ours == [], output


@needs_analyze
def test_verify_catches_a_broken_unit(tmp_path):
    """The check above would see a mistake: a missing binary fails verify, and a misspelt
    directive is reported."""
    missing = instance(tmp_path, binary=str(tmp_path / "no-such-rlchat"))
    result = analyze("verify", str(missing))
    assert result.returncode != 0
    assert "no-such-rlchat" in result.stdout + result.stderr

    typo = instance(tmp_path, port=8002)
    typo.write_text(
        typo.read_text().replace("NoNewPrivileges=", "NoNewPrivilege="), encoding="utf-8"
    )
    result = analyze("verify", str(typo))
    assert "NoNewPrivilege" in result.stdout + result.stderr


@needs_analyze
def test_security_exposure_is_low(tmp_path):
    unit = instance(tmp_path)
    result = analyze("security", "--offline=yes", f"--threshold={MAX_EXPOSURE}", str(unit))
    output = result.stdout + result.stderr
    if "unrecognized option" in output or "Unknown option" in output:
        pytest.skip(f"this systemd-analyze (older than 250) has no `security --offline`: {output}")
    assert result.returncode == 0, output
    level = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", output)
    assert level, output
    assert float(level.group(1)) * 10 <= MAX_EXPOSURE, output


def test_hardening_directives_present():
    service = parse_unit(UNIT)["Service"]
    for key, value in HARDENING.items():
        assert value in service.get(key, []), f"{key}={value} missing from {UNIT.name}"
    # Writable paths are the service's own; HOME and the XDG dirs point into them, so the
    # server's default SQLite (platformdirs' user data dir) lands in the state directory.
    assert service["StateDirectory"] == ["rlchat"]
    env = dict(item.partition("=")[::2] for item in service["Environment"])
    assert env["HOME"] == env["XDG_DATA_HOME"] == "/var/lib/rlchat"
    assert env["XDG_CACHE_HOME"] == "/var/cache/rlchat"
    assert "MemoryDenyWriteExecute" not in service, "PyTorch's JIT kernels need W+X memory"
    assert service["TimeoutStopSec"], "uvicorn needs time to finish requests on SIGTERM"
    assert parse_unit(UNIT)["Install"]["WantedBy"][0].split()[0] == "multi-user.target"


def test_exec_start_serves_the_instance_port_on_loopback():
    """The database comes from RLCHAT_DATABASE in the environment (`rlchat serve` reads it),
    never from the command line, where its password would show in ps."""
    (exec_start,) = parse_unit(UNIT)["Service"]["ExecStart"]
    argv = exec_start.split()
    assert argv[:2] == [INSTALLED_BINARY, "serve"]
    # Unbraced: systemd splits a multi-run RLCHAT_RUNS into one argument per run.
    assert argv[2] == "$RLCHAT_RUNS"
    options = dict(zip(argv[3::2], argv[4::2], strict=True))
    assert options == {
        "--host": "127.0.0.1",
        "--port": "%i",
        "--device": "cpu",
    }


def test_environment_file_defines_what_the_unit_uses():
    values = {}
    for line in ENV_FILE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), f"bad line {line!r}"
            values[key] = value
    assert set(values) == {"RLCHAT_RUNS", "RLCHAT_DATABASE"}
    assert values["RLCHAT_DATABASE"].startswith("postgresql://")
    # Not the server's own settings prefix, which pydantic-settings would read as well.
    assert not any(key.startswith("RLCHAT_SERVE_") for key in values)


def test_instances_match_nginx_replicas():
    """nginx balances over exactly the ports the documented instances listen on."""
    ports = re.findall(r"^\s*server 127\.0\.0\.1:(\d+)", REPLICAS.read_text(), re.MULTILINE)
    assert ports == ["8001", "8002"]
    assert "rlchat@8001.service and rlchat@8002.service" in REPLICAS.read_text()
