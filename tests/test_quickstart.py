from __future__ import annotations

import json

import pytest

from rlchat.quickstart import CE_SHARE, DONE_FILE, RL_SHARE, QuickstartPlan, rl_minutes


def plan_with_ce(tmp_path, minutes: float, done: dict | None) -> QuickstartPlan:
    plan = QuickstartPlan(out=tmp_path, genres=["comedy"], minutes=minutes)
    if done is not None:
        plan.ce_dir.mkdir(parents=True)
        (plan.ce_dir / DONE_FILE).write_text(json.dumps(done), encoding="utf-8")
    return plan


def test_rl_gets_the_time_early_stopping_left_unused(tmp_path):
    plan = plan_with_ce(tmp_path, 20, {"steps": 3000, "minutes": 8.0})
    assert rl_minutes(plan) == pytest.approx(20 * RL_SHARE + (20 * CE_SHARE - 8.0))
    assert rl_minutes(plan) + 8.0 == pytest.approx(20 * (CE_SHARE + RL_SHARE))


def test_rl_gets_its_own_share_when_ce_used_all_of_its_own(tmp_path):
    plan = plan_with_ce(tmp_path, 20, {"minutes": 12.4})  # overran its share a little
    assert rl_minutes(plan) == pytest.approx(20 * RL_SHARE)


@pytest.mark.parametrize("done", [None, {"steps": 10}, {"minutes": "soon"}])
def test_rl_gets_its_own_share_when_ce_time_is_unknown(tmp_path, done):
    assert rl_minutes(plan_with_ce(tmp_path, 20, done)) == pytest.approx(20 * RL_SHARE)
