from __future__ import annotations

import pytest

from rlchat.quickstart import EVAL_RESERVE_CAP, SHARES, eval_plan, stage_budget


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
    reserve = eval_plan(minutes, seconds_per_pair=0.04, test_pairs=3500).minutes
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


def test_the_evaluation_reserve_grows_on_a_slower_machine_up_to_a_cap():
    fast = eval_plan(20, seconds_per_pair=0.02, test_pairs=3500)
    slow = eval_plan(20, seconds_per_pair=0.04, test_pairs=3500)
    assert fast.max_pairs == slow.max_pairs == 0  # both evaluate every test pair
    assert slow.minutes == pytest.approx(2 * fast.minutes)
    # Far slower: the reserve stops at its cap and a share of the pairs is evaluated, sized
    # so that the estimated cost fits.
    crawling = eval_plan(20, seconds_per_pair=0.5, test_pairs=3500)
    assert crawling.minutes == pytest.approx(EVAL_RESERVE_CAP * 20)
    assert 0 < crawling.max_pairs < 3500
    assert eval_plan(20, seconds_per_pair=1.0, test_pairs=3500).max_pairs < crawling.max_pairs
    assert eval_plan(20, seconds_per_pair=None, test_pairs=3500).minutes > 0


def test_no_budget_is_negative_past_the_deadline():
    assert stage_budget("rl", left_minutes=0.5, reserve_minutes=2.0, done=set(SHARES) - {"rl"}) == 0
    with pytest.raises(ValueError, match="done or unknown"):
        stage_budget("rl", 10, 1, done={"rl"})


def test_the_evaluation_reserve_counts_the_test_pairs_evaluation_will_see(tmp_path, corpus_dir):
    from rlchat.config import DataConfig, TokenizerConfig
    from rlchat.corpus import load_corpus
    from rlchat.dataset import prepare_dataset
    from rlchat.quickstart import QuickstartPlan, genre_splits
    from rlchat.runs import RunDir
    from rlchat.tokenizer import train_tokenizer

    corpus = load_corpus(corpus_dir)
    plan = QuickstartPlan(out=tmp_path, genres=["comedy"], minutes=20, split_by="movie")
    texts = [t for p in corpus.pairs(["comedy"])[:3000] for t in (p.source, p.reply)]
    tokenizer = train_tokenizer(texts, TokenizerConfig(vocab_size=500))
    plan.pretrain_dir.mkdir()
    tokenizer.save(RunDir(plan.pretrain_dir).tokenizer_path)
    counted = len(genre_splits(plan, corpus)["test"].examples)
    data = DataConfig(genres=["comedy"], split_by="movie")
    expected = prepare_dataset(corpus, data, TokenizerConfig(), tokenizer=tokenizer)
    assert counted == len(expected.splits["test"].examples)
    # Fewer than the raw share of pairs the first guess takes: the filters drop some.
    assert 0 < counted < len(corpus.pairs(["comedy"])) * data.test_fraction


def test_the_evaluation_cost_is_timed_on_this_machines_decoding(tmp_path, corpus_dir, monkeypatch):
    import time

    from helpers.tiny_run import train_tiny_run
    from rlchat.chatbot import Chatbot
    from rlchat.corpus import load_corpus
    from rlchat.quickstart import EVAL_COST_PER_DECODE, QuickstartPlan, measure_eval_cost

    corpus = load_corpus(corpus_dir)
    plan = QuickstartPlan(out=tmp_path, genres=["comedy"], minutes=20)
    train_tiny_run(plan.pretrain_dir, corpus)
    decoded = []
    original = Chatbot.reply_batch

    def reply_batch(self, messages, histories=None, config=None, generator=None):
        decoded.append((len(messages), config.rerank))
        return original(self, messages, histories, config, generator)

    monkeypatch.setattr(Chatbot, "reply_batch", reply_batch)
    seconds, test_pairs = measure_eval_cost(plan, corpus)
    # A warm-up, then greedy and the served MMI (reranked by the stand-in backward model).
    assert decoded[1:] == [(128, "none"), (128, "mmi")]
    assert seconds > 0 and test_pairs > 1000
    # A 20 ms pause in every batch shows in the cost: it is timed, not assumed.

    def slow_reply_batch(self, messages, histories=None, config=None, generator=None):
        time.sleep(0.02)
        return original(self, messages, histories, config, generator)

    monkeypatch.setattr(Chatbot, "reply_batch", slow_reply_batch)
    slower, _ = measure_eval_cost(plan, corpus)
    pause = EVAL_COST_PER_DECODE * (2 * 0.02 + 0.02) / 128
    assert slower > pause


def test_every_stage_trains_with_the_plans_seed_and_keeps_the_split(tmp_path, monkeypatch):
    import rlchat.train.cross_entropy as cross_entropy
    import rlchat.train.scst as scst
    from rlchat.config import CrossEntropyConfig
    from rlchat.quickstart import FINETUNE_LR, QuickstartPlan, train_stage

    seen, rates = {}, {}

    def fake_ce(*, data_config, train_config, out, **_):
        seen[out.name] = (train_config.seed, data_config.split_seed)
        rates[out.name] = train_config.lr
        return {}

    def fake_rl(*, rl_config, out, **_):
        seen[out.name] = (rl_config.seed, None)
        return {}

    monkeypatch.setattr(cross_entropy, "train_cross_entropy", fake_ce)
    monkeypatch.setattr(scst, "train_rl", fake_rl)
    plan = QuickstartPlan(out=tmp_path, genres=["comedy"], minutes=20, seed=3)
    for stage in ("pretrain", "finetune", "backward", "rl"):
        plan.stage_dirs[stage].mkdir(parents=True)
        train_stage(plan, stage, corpus=None, minutes=1.0)
    assert seen == {
        plan.pretrain_dir.name: (3, 0),
        plan.ce_dir.name: (3, 0),
        plan.backward_dir.name: (3, 0),
        plan.rl_dir.name: (3, None),
    }
    # Pretraining at the CE rate; both fine-tunes from it at their own, lower one.
    assert rates == {
        plan.pretrain_dir.name: CrossEntropyConfig().lr,
        plan.ce_dir.name: FINETUNE_LR,
        plan.backward_dir.name: FINETUNE_LR,
    }
    assert CrossEntropyConfig().lr > FINETUNE_LR


def test_vocabulary_unlikelihood_is_on_by_default_in_plan_and_cli(tmp_path):
    import inspect

    from rlchat import cli
    from rlchat.config import FINETUNE_VOCAB_UNLIKELIHOOD
    from rlchat.quickstart import QuickstartPlan

    plan = QuickstartPlan(out=tmp_path, genres=["comedy"], minutes=20)
    assert plan.finetune_vocab_unlikelihood == FINETUNE_VOCAB_UNLIKELIHOOD > 0
    option = inspect.signature(cli.quickstart).parameters["finetune_vocab_unlikelihood"]
    assert option.default == FINETUNE_VOCAB_UNLIKELIHOOD


def test_vocabulary_unlikelihood_reaches_the_genre_fine_tune_only(tmp_path, monkeypatch):
    import rlchat.train.cross_entropy as cross_entropy
    from rlchat.quickstart import QuickstartPlan, train_stage

    weights = {}

    def fake_ce(*, train_config, out, **_):
        weights[out.name] = (
            train_config.vocab_unlikelihood,
            train_config.vocab_unlikelihood_spare_pieces,
            train_config.negative_threshold,
            train_config.vocab_unlikelihood_share,
            train_config.prefix_unlikelihood,
        )
        return {}

    monkeypatch.setattr(cross_entropy, "train_cross_entropy", fake_ce)
    cases = ((0.0, False, 0.0, 1.0, 0.0), (10.0, True, 0.05, 0.25, 3.0))
    for value, spare, negative, share, prefix in cases:
        plan = QuickstartPlan(
            out=tmp_path / str(value),
            genres=["comedy"],
            minutes=20,
            finetune_vocab_unlikelihood=value,
            finetune_spare_pieces=spare,
            finetune_negative_threshold=negative,
            finetune_vocab_unlikelihood_share=share,
            finetune_prefix_unlikelihood=prefix,
        )
        for stage in ("pretrain", "finetune", "backward"):
            plan.stage_dirs[stage].mkdir(parents=True)
            train_stage(plan, stage, corpus=None, minutes=1.0)
        assert weights == {
            plan.pretrain_dir.name: (0.0, False, 0.0, 1.0, 0.0),
            plan.ce_dir.name: (value, spare, negative, share, prefix),
            plan.backward_dir.name: (0.0, False, 0.0, 1.0, 0.0),
        }


def test_top1_selection_validates_the_genre_fine_tune_often_and_changes_nothing_else(
    tmp_path, monkeypatch
):
    import rlchat.train.cross_entropy as cross_entropy
    from rlchat.config import CrossEntropyConfig
    from rlchat.quickstart import FINETUNE_EVAL_EVERY, QuickstartPlan, train_stage

    fields = ("select_top1_weight", "eval_every", "schedule", "patience")
    seen = {}

    def fake_ce(*, train_config, out, **_):
        seen[out.name] = tuple(getattr(train_config, name) for name in fields)
        return {}

    monkeypatch.setattr(cross_entropy, "train_cross_entropy", fake_ce)
    defaults = tuple(getattr(CrossEntropyConfig(), name) for name in fields)
    for weight in (0.0, 1.5):
        plan = QuickstartPlan(
            out=tmp_path / str(weight),
            genres=["comedy"],
            minutes=20,
            finetune_select_top1_weight=weight,
        )
        for stage in ("pretrain", "finetune", "backward"):
            plan.stage_dirs[stage].mkdir(parents=True)
            train_stage(plan, stage, corpus=None, minutes=1.0)
        finetune = (weight, FINETUNE_EVAL_EVERY, "constant", 0) if weight else defaults
        assert seen == {
            plan.pretrain_dir.name: defaults,
            plan.ce_dir.name: finetune,
            plan.backward_dir.name: defaults,
        }


def test_the_budget_counts_from_when_the_command_began(tmp_path, monkeypatch):
    import time

    import rlchat.quickstart as quickstart

    budgets = []

    def first_stage_only(plan, stage, corpus, minutes):
        budgets.append(minutes)
        raise KeyboardInterrupt  # stop after the first stage's budget is known

    monkeypatch.setattr(quickstart, "train_stage", first_stage_only)
    plan = quickstart.QuickstartPlan(out=tmp_path, genres=["comedy"], minutes=20)
    for started in (None, time.monotonic() - 120):  # now, and two minutes ago
        with pytest.raises(KeyboardInterrupt):
            quickstart.run_quickstart(plan, corpus=None, started=started)
    reserve = quickstart.eval_plan(20, None, 0).minutes
    share = SHARES["pretrain"] / sum(SHARES.values())
    assert budgets[0] == pytest.approx((20 - reserve) * share, abs=0.01)
    assert budgets[0] - budgets[1] == pytest.approx(2 * share, abs=0.01)
