from __future__ import annotations

import numpy as np
import pytest

from helpers.tiny_run import train_tiny_run
from rlchat.chatbot import Chatbot
from rlchat.corpus import Pair, load_corpus
from rlchat.dataset import prepare_dataset
from rlchat.evaluation import build_eval_set, evaluate_runs
from rlchat.tokenizer import normalize_text

PAIRS = 150


@pytest.fixture(scope="module")
def setup(tmp_path_factory, corpus_dir):
    """A barely trained comedy run and its split of the real excerpt."""
    corpus = load_corpus(corpus_dir)
    out = train_tiny_run(tmp_path_factory.mktemp("runs") / "tiny", corpus)
    bot = Chatbot.load(out, device="cpu")
    dataset = prepare_dataset(corpus, bot.data_config, bot.tokenizer_config, bot.tokenizer)
    splits = {name: [e.pair for e in data.examples] for name, data in dataset.splits.items()}
    return bot, splits


@pytest.fixture(scope="module")
def result(setup):
    bot, splits = setup
    return evaluate_runs([bot], splits, max_pairs=PAIRS, resamples=100, seed=1)


def test_every_system_answers_the_same_pairs_through_the_same_figures(result):
    names = [run["name"] for run in result["runs"]]
    assert names == ["tiny", "random", "retrieval", "reference"]
    assert result["pairs"] == PAIRS
    bot, random, retrieval, reference = (run["metrics"] for run in result["runs"])
    assert set(random) == set(retrieval) == set(bot) - {"perplexity"}
    for figure in ("top1", "unique", "entropy", "distinct2", "dull_rate", "stock_rate"):
        assert figure in reference
    # The held-out replies have no reference to be judged against, nor a self-play.
    assert not {"bleu2", "sacrebleu", "reward", "selfplay_turns"} & set(reference)
    assert 0 < bot["top1"] <= 1 and 0 < bot["unique"] <= 1


def test_comparisons_cover_both_groups_with_a_p_value(result):
    rows = result["comparisons"]
    assert {(r["run"], r["baseline"]) for r in rows} == {("random", "tiny"), ("retrieval", "tiny")}
    assert {r["group"] for r in rows} == {"all", "unseen"}
    assert all(0 < r["p_value"] <= 1 and r["low"] <= r["diff"] <= r["high"] for r in rows)
    # Each difference is the difference of the figures in the table, group by group.
    figures = {run["name"]: run for run in result["runs"]}
    for r in rows:
        key = "metrics" if r["group"] == "all" else "unseen"
        expected = figures[r["run"]][key][r["metric"]] - figures["tiny"][key][r["metric"]]
        assert r["diff"] == pytest.approx(expected)


def test_retrieval_says_no_word_the_training_lines_lack_and_held_out_lines_do(setup, result):
    """Retrieval answers with training replies, so its non-word rate is 0 by construction;
    held-out lines hold names and rare words no training line has."""
    figures = {run["name"]: run["metrics"] for run in result["runs"]}
    assert figures["retrieval"]["nonword_rate"] == 0
    assert figures["random"]["nonword_rate"] == 0
    assert 0 < figures["reference"]["nonword_rate"] < 0.5
    assert "nonword_rate" in figures["tiny"]


def test_unseen_group_holds_the_pairs_whose_input_is_not_in_training(setup, result):
    _, splits = setup
    eval_set = build_eval_set(
        splits["test"], train_pairs=splits["train"], valid_pairs=splits["valid"],
        max_pairs=PAIRS, seed=1,
    )  # fmt: skip
    seen = {normalize_text(p.source) for p in splits["train"]}
    expected = sum(normalize_text(p.source) not in seen for p in eval_set.pairs)
    assert result["unseen_pairs"] == expected == int(eval_set.unseen.sum())
    assert 0 < expected < PAIRS
    assert "unseen" in result["runs"][0] and "selfplay_turns" not in result["runs"][0]["unseen"]


def test_subsets_are_drawn_with_the_seed_not_cut_from_the_front(setup):
    _, splits = setup
    test = splits["test"]

    def subset(seed):
        return build_eval_set(
            test, train_pairs=splits["train"], valid_pairs=splits["valid"], max_pairs=60,
            seed=seed,
        )  # fmt: skip

    first, again, other = subset(0), subset(0), subset(1)
    assert first.pairs == again.pairs and first.pairs != other.pairs
    assert first.pairs != test[:60]
    assert len({p.movie_id for p in first.pairs}) > len({p.movie_id for p in test[:60]})
    assert first.selfplay_seeds == again.selfplay_seeds
    assert first.selfplay_seeds != list(dict.fromkeys(p.source for p in first.pairs))[:60]


def test_evaluation_is_deterministic_for_a_seed(setup, result):
    bot, splits = setup
    again = evaluate_runs([bot], splits, max_pairs=PAIRS, resamples=100, seed=1)
    timings = again.pop("seconds")
    assert set(timings) >= {"replies", "comparisons", "self-play", "perplexity"}
    assert again == {key: value for key, value in result.items() if key != "seconds"}


def test_clusters_keep_a_conversation_and_a_repeated_input_together():
    def pair(source, conversation):
        return Pair(source, "reply.", movie_id="m", conversation_id=conversation, genres=())

    pairs = [pair("what?", "c1"), pair("hi.", "c1"), pair("What?", "c2"), pair("bye.", "c3")]
    eval_set = build_eval_set(pairs, train_pairs=pairs[:1], valid_pairs=pairs[:1])
    assert eval_set.clusters.tolist() == [0, 0, 0, 1]
    assert eval_set.references[0] == eval_set.references[2] == ["reply.", "reply."]
    assert np.array_equal(eval_set.unseen, [False, True, False, True])


def test_counts_shared_once_give_the_figures_counted_per_group():
    """Counting all systems once on a shared vocabulary and slicing rows must give exactly
    the figures of counting each group's replies afresh."""
    from rlchat.evaluation import FIGURES, SystemResult, attach_counts, statistics
    from rlchat.significance import figure_of

    replies_a = ["i don't know.", "yes.", "yes.", "what do you want?", "no, sir."]
    replies_b = ["go home.", "yes.", "i don't know.", "i don't know now.", "what?"]
    shared = [SystemResult("a", "ce", replies_a), SystemResult("b", "rl", replies_b)]
    fresh = [SystemResult("a", "ce", replies_a), SystemResult("b", "rl", replies_b)]
    attach_counts(shared)
    rows = np.asarray([0, 2, 3])
    count_figures = [f for f in FIGURES if f.kind.startswith(("ngrams", "replies"))]
    assert len(count_figures) == 5
    for figure in count_figures:
        with_shared, value = statistics(figure, shared, rows)
        counted, _ = statistics(figure, fresh, rows)
        for s, c in zip(with_shared, counted, strict=True):
            assert figure_of(s, value) == pytest.approx(figure_of(c, value))
