"""The Dockerfile and .dockerignore, read as text: what scripts/image_smoke.sh (in CI) builds
for real is checked here cheaply, so that a broken edit fails without podman."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for name, args in instructions():
        if name == "FROM":
            result.append([])
        if result:
            result[-1].append((name, args))
    return result


def ignored(path: str) -> bool:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    verdict = False
    for pattern in patterns:  # later patterns win, `!` re-includes
        negate = pattern.startswith("!")
        if fnmatch.fnmatch(path, pattern.lstrip("!").rstrip("/")):
            verdict = not negate
    return verdict


def test_the_base_is_debian_bookworm_slim() -> None:
    assert re.search(r"^ARG BASE=docker\.io/library/debian:bookworm-slim$", DOCKERFILE, re.M)
    assert stages()[0][0] == ("FROM", "${BASE} AS python")


def test_torch_is_always_pinned_and_cpu_by_default() -> None:
    runs = " ".join(args for name, args in instructions() if name == "RUN")
    installs = re.findall(r"pip install [^;&]*", runs)
    torch = [word for command in installs for word in command.split() if "torch" in word]
    assert len(torch) == 2 and set(torch) == {"torch==2.13.0"}, torch
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu" in DOCKERFILE
    assert "--no-index --find-links /wheels" in DOCKERFILE


def test_the_final_stage_is_small_and_unprivileged() -> None:
    final = dict(stages()[-1])
    assert final["FROM"] == "python", "the last stage starts from the interpreter-only stage"
    assert final["USER"] not in ("", "root", "0")
    assert final["VOLUME"] == "/models"
    assert final["EXPOSE"] == "8000"
    assert "/healthz" in final["HEALTHCHECK"] and "python3" in final["HEALTHCHECK"]
    assert final["ENTRYPOINT"] == '["rlchat", "serve"]'
    # No compiler, pip cache or venv tooling installed where the server runs.
    run = " ".join(args for name, args in stages()[-1] + stages()[0] if name == "RUN")
    assert not re.search(r"\b(gcc|build-essential|python3-dev|python3-venv|curl)\b", run)
    assert "PIP_NO_CACHE_DIR=1" in DOCKERFILE


def test_dockerignore_keeps_what_the_build_copies_and_drops_the_bulk() -> None:
    copied = [
        source
        for name, args in instructions()
        if name == "COPY" and not args.startswith("--from")
        for source in args.split()[:-1]
        if not source.startswith("${")
    ]
    assert set(copied) == {"pyproject.toml", "README.md", "src"}
    for source in [*copied, "wheels"]:
        assert not ignored(source), f".dockerignore drops {source}, which the build needs"
    for bulk in (".venv", ".git", "runs", "test-artifacts", ".pytest_cache"):
        assert ignored(bulk), f".dockerignore sends {bulk} to the build"
