"""MMI reranking on real (tiny) forward and backward runs of the excerpt."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from helpers.tiny_run import train_tiny_pair
from rlchat.chatbot import Chatbot, as_corpus_line
from rlchat.config import DecodeConfig
from rlchat.corpus import load_corpus
from rlchat.decoding import generate
from rlchat.rerank import best_of_each_input, check_rerank
from rlchat.scoring import target_log_likelihood

MESSAGES = ["how are you?", "what time is it?", "where are you going tonight?", "no."]


@pytest.fixture(scope="module")
def bot(tmp_path_factory, corpus_dir):
    corpus = load_corpus(corpus_dir)
    root = tmp_path_factory.mktemp("rerank")
    forward, backward = train_tiny_pair(root, corpus)
    return Chatbot.load(forward, device="cpu", backward=backward)


def test_the_best_candidate_of_each_input_is_chosen_first_on_ties():
    scores = torch.tensor([0.1, 0.5, 0.5, float("-inf"), -2.0, -1.0])
    assert best_of_each_input(scores, 3) == [1, 5]


def test_mmi_keeps_the_candidate_with_the_best_combined_score(bot):
    config = DecodeConfig(
        strategy="sample", rerank="mmi", candidates=6, mmi_weight=2.0, mmi_length=0.1
    )
    sources = [bot.encode_input(m) for m in MESSAGES]
    chosen = bot.mmi_reply_ids(MESSAGES, sources, config, torch.Generator().manual_seed(3))
    # The same draws again, scored here by the formula itself.
    candidates = generate(
        bot.model, sources, config, generator=torch.Generator().manual_seed(3), num_samples=6
    )
    rows = [s for s in sources for _ in range(6)]
    fwd, fwd_n = target_log_likelihood(bot.model, rows, candidates, "cpu")
    written = [bot.backward.tokenizer.encode(as_corpus_line(m)) for m in MESSAGES for _ in range(6)]
    bwd, bwd_n = target_log_likelihood(
        bot.backward.model, [c or [2] for c in candidates], written, "cpu"
    )
    for i, reply in enumerate(chosen):
        best_score, best_ids = float("-inf"), None
        for k in range(6):
            row = i * 6 + k
            if not candidates[row]:
                continue
            score = fwd[row] / fwd_n[row] + 2.0 * bwd[row] / bwd_n[row]
            score += 0.1 * len(candidates[row])
            if score > best_score:
                best_score, best_ids = score, candidates[row]
        assert reply == best_ids
    # The backward term changes the choice somewhere: the test would pass for plain sampling
    # only by chance if it did not.
    forward_only = bot.mmi_reply_ids(
        MESSAGES,
        sources,
        replace(config, mmi_weight=0.0, mmi_length=0.0),
        torch.Generator().manual_seed(3),
    )
    assert forward_only != chosen


def test_beam_candidates_without_mmi_terms_give_beam_searchs_own_best(bot):
    beam = DecodeConfig(strategy="beam", beam_size=5, length_penalty=0.0)
    mmi = replace(beam, rerank="mmi", candidates=5, mmi_weight=0.0, mmi_form="sum")
    assert bot.reply_batch(MESSAGES, config=mmi) == bot.reply_batch(MESSAGES, config=beam)


def test_beam_n_best_lists_the_best_first(bot):
    config = DecodeConfig(strategy="beam", beam_size=5, length_penalty=0.0)
    sources = [bot.encode_input(m) for m in MESSAGES]
    best = generate(bot.model, sources, config)
    n_best = generate(bot.model, sources, config, num_samples=4)
    assert [n_best[i * 4] for i in range(len(MESSAGES))] == best
    fwd, _ = target_log_likelihood(bot.model, [s for s in sources for _ in range(4)], n_best, "cpu")
    for i in range(len(MESSAGES)):
        found = [fwd[i * 4 + k].item() for k in range(4) if n_best[i * 4 + k]]
        assert found == sorted(found, reverse=True)
        assert len({tuple(c) for c in n_best[i * 4 : i * 4 + 4]}) == 4


def test_mmi_needs_candidates_and_a_backward_model(bot, tmp_path):
    with pytest.raises(ValueError, match="candidates"):
        check_rerank(DecodeConfig(rerank="mmi", strategy="sample", candidates=0))
    # Greedy search has one candidate: MMI keeps it.
    greedy = DecodeConfig(strategy="greedy")
    assert bot.reply_batch(MESSAGES, config=replace(greedy, rerank="mmi")) == bot.reply_batch(
        MESSAGES, config=greedy
    )
    alone = Chatbot(bot.name, bot.model, bot.tokenizer, bot.config, bot.device)
    with pytest.raises(ValueError, match="backward model"):
        alone.reply("hi", config=DecodeConfig(strategy="sample", rerank="mmi"))
    with pytest.raises(ValueError, match="not a backward model"):
        alone.attach_backward(alone)


@pytest.mark.parametrize(
    "config",
    [
        DecodeConfig(strategy="sample", top_p=0.9, temperature=0.8),
        DecodeConfig(strategy="beam", beam_size=4, length_penalty=1.0),
    ],
)
def test_the_decode_gives_the_forward_log_likelihood_a_teacher_forced_pass_gives(bot, config):
    from rlchat.decoding import generate_scored
    from rlchat.rerank import forward_log_likelihood

    sources = [bot.encode_input(m) for m in MESSAGES]
    result = generate_scored(
        bot.model, sources, config, generator=torch.Generator().manual_seed(1), num_samples=4
    )
    sums, counts = forward_log_likelihood(result, config)
    candidates = result.to_lists()
    rows = [s for s in sources for _ in range(4)]
    forced, forced_counts = target_log_likelihood(bot.model, rows, candidates, "cpu")
    finished = torch.isfinite(sums)
    assert bool(finished.any())
    assert torch.equal(counts[finished], forced_counts[finished])
    assert torch.allclose(sums[finished], forced[finished], atol=1e-4)
