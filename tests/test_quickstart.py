from __future__ import annotations

import pytest

from rlchat.quickstart import SHARES, eval_reserve_minutes, stage_budget


def spend(minutes: float, reserve: float, pretrain_used: float = 1.0) -> dict[str, float]:
    """Budgets of every stage when pretraining uses `pretrain_used` of its own, the others
    all of theirs."""
    left, done, budgets = minutes, set(), {}
    for stage in SHARES:
        budgets[stage] = stage_budget(stage, left, reserve, done)
        left -= budgets[stage] * (pretrain_used if stage == "pretrain" else 1.0)
        done.add(stage)
    return budgets


@pytest.mark.parametrize("minutes", [5, 20, 60])
def test_stage_budgets_and_the_evaluation_reserve_sum_to_the_minutes(minutes):
    reserve = eval_reserve_minutes(minutes, pairs_per_s=300, test_pairs=3500)
    budgets = spend(minutes, reserve)
    assert sum(budgets.values()) + reserve == pytest.approx(minutes)
    shares = {stage: budget / (minutes - reserve) for stage, budget in budgets.items()}
    assert shares == pytest.approx(SHARES)


def test_a_stage_that_ends_early_hands_its_time_to_the_later_ones():
    on_time, early = spend(20, 2.0), spend(20, 2.0, pretrain_used=0.5)
    assert early["pretrain"] == on_time["pretrain"]
    assert early["rl"] > on_time["rl"]
    unused = on_time["pretrain"] / 2
    assert sum(early.values()) - early["pretrain"] == pytest.approx(
        sum(on_time.values()) - on_time["pretrain"] + unused
    )
    # What the later stages get is in proportion to their shares.
    assert early["rl"] / early["backward"] == pytest.approx(SHARES["rl"] / SHARES["backward"])


def test_the_evaluation_reserve_grows_on_a_slower_machine():
    fast = eval_reserve_minutes(20, pairs_per_s=400, test_pairs=3500)
    slow = eval_reserve_minutes(20, pairs_per_s=100, test_pairs=3500)
    assert slow == pytest.approx(4 * fast) and slow < 20
    assert eval_reserve_minutes(20, pairs_per_s=None, test_pairs=3500) > 0


def test_no_budget_is_negative_past_the_deadline():
    assert stage_budget("rl", left_minutes=0.5, reserve_minutes=2.0, done=set(SHARES) - {"rl"}) == 0
    with pytest.raises(ValueError, match="done or unknown"):
        stage_budget("rl", 10, 1, done={"rl"})
