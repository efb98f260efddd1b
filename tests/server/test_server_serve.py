"""`serve()`, what `rlchat serve` calls: checks its runs, hands settings to uvicorn's workers."""

from __future__ import annotations

import os

import pytest
import uvicorn
from fastapi import FastAPI

from rlchat.runs import RunError
from rlchat.server import ServerSettings, serve
from rlchat.server.settings import default_data_dir


@pytest.fixture
def uvicorn_calls(monkeypatch) -> list[tuple[tuple, dict]]:
    calls: list[tuple[tuple, dict]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: calls.append((args, kwargs)))
    # serve() exports settings for worker processes; keep them out of the other tests.
    monkeypatch.setattr(os, "environ", dict(os.environ))
    return calls


def test_a_missing_run_directory_is_refused_before_starting(tmp_path, uvicorn_calls):
    with pytest.raises(RunError, match="not a run directory"):
        serve([tmp_path / "missing"])
    with pytest.raises(RunError):
        serve([])
    assert uvicorn_calls == []


def test_one_worker_runs_the_app_in_process(tiny_runs, tmp_path, uvicorn_calls):
    serve([tiny_runs["comedy"]], port=8123, database=tmp_path / "f.sqlite3")
    [(args, kwargs)] = uvicorn_calls
    assert isinstance(args[0], FastAPI) and kwargs["port"] == 8123
    assert args[0].state.settings.batch_wait_ms == ServerSettings().batch_wait_ms


def test_several_workers_get_the_settings_through_the_environment(
    tiny_runs, tmp_path, uvicorn_calls
):
    runs = [tiny_runs["comedy"], tiny_runs["drama"]]
    serve(
        runs,
        workers=3,
        cors_origins=["http://localhost:8080"],
        batch_wait_ms=0,
        device="cpu",
    )
    [(args, kwargs)] = uvicorn_calls
    assert args == ("rlchat.server.app:create_app",)
    assert kwargs["factory"] and kwargs["workers"] == 3
    seen = ServerSettings()  # what a worker process builds from the environment
    assert seen.runs == [r.resolve() for r in runs]
    assert seen.cors_origins == ["http://localhost:8080"] and seen.batch_limit == 1
    # Workers share nothing else, so conversations go to a shared database.
    assert seen.database == str(default_data_dir() / "feedback.sqlite3")
    assert seen.history_in_database


def test_the_database_may_come_from_the_environment(tiny_runs, monkeypatch, uvicorn_calls):
    """As the systemd unit passes it: no password on the command line."""
    from typer.testing import CliRunner

    from rlchat.cli import app

    url = "postgresql://rlchat:secret@127.0.0.1:5432/rlchat"
    monkeypatch.setenv("RLCHAT_DATABASE", url)
    result = CliRunner().invoke(app, ["serve", str(tiny_runs["comedy"]), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    [(args, _)] = uvicorn_calls
    assert args[0].state.settings.database == url
    bad = CliRunner().invoke(app, ["serve", str(tiny_runs["comedy"]), "--database", "mysql://x"])
    assert bad.exit_code != 0 and "--database" in bad.output
