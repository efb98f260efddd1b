"""Greedy, sampling and beam decoding on a small random model."""

from __future__ import annotations

import pytest
import torch

from rlchat.batching import encode_inputs, make_batch
from rlchat.config import DecodeConfig, ModelConfig
from rlchat.decoding import (
    DecodeResult,
    SelfCriticalSampling,
    decode,
    generate,
    make_strategy,
)
from rlchat.decoding.base import repeated_ngram_mask
from rlchat.decoding.beam import BeamSearch, length_penalty
from rlchat.model import Seq2Seq
from rlchat.tokenizer import BOS_ID, EOS_ID, PAD_ID

VOCAB = 50


def small_model(seed: int = 0) -> Seq2Seq:
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=VOCAB, embedding_dim=16, hidden_size=32, dropout=0.0)
    return Seq2Seq(config).eval()


def bias_token(model: Seq2Seq, token: int, amount: float) -> Seq2Seq:
    """Make ``token`` much more (or less) likely at every step."""
    with torch.no_grad():
        model.decoder.out.bias[token] += amount
    return model


def random_sources(count: int, seed: int) -> list[list[int]]:
    rng = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 9, (count,), generator=rng).tolist()
    return [torch.randint(5, VOCAB, (n,), generator=rng).tolist() for n in lengths]


def run(model: Seq2Seq, sources: list[list[int]], config: DecodeConfig, **kwargs) -> DecodeResult:
    src, src_lengths = encode_inputs(sources)
    with torch.inference_mode():
        return decode(model, src, src_lengths, config, **kwargs)


def assert_well_formed(result: DecodeResult) -> None:
    """Every row: real tokens, then <eos> at length - 1, then only padding."""
    for row, length in zip(result.tokens.tolist(), result.lengths.tolist(), strict=True):
        assert row[length - 1] == EOS_ID
        assert EOS_ID not in row[: length - 1]
        assert not {PAD_ID, BOS_ID} & set(row[:length])
        assert all(token == PAD_ID for token in row[length:])


def repeats_a_bigram(ids: list[int]) -> bool:
    bigrams = list(zip(ids, ids[1:], strict=False))
    return len(set(bigrams)) < len(bigrams)


GREEDY = DecodeConfig(strategy="greedy", min_tokens=0, no_repeat_ngram=0)


def step_by_step_greedy(model: Seq2Seq, source: list[int], max_tokens: int) -> tuple[list, float]:
    """Greedy reply and its summed log-prob, one input and one model step at a time."""
    src, src_lengths = encode_inputs([source])
    tokens, score = [], 0.0
    with torch.inference_mode():
        state = model.start(src, src_lengths)
        token = torch.tensor([BOS_ID])
        for step in range(max_tokens + 1):
            log_probs, state = model.step_log_probs(token, state)
            log_probs[0, [PAD_ID, BOS_ID]] = float("-inf")
            token = log_probs.argmax(-1) if step < max_tokens else torch.tensor([EOS_ID])
            tokens.append(int(token))
            score += float(log_probs[0, token])
            if int(token) == EOS_ID:
                break
    return tokens, score


def test_greedy_equals_step_by_step_argmax():
    model = small_model()
    source = [7, 8, 9, 10]
    max_tokens = 12
    expected, expected_score = step_by_step_greedy(model, source, max_tokens)

    result = run(
        model,
        [source],
        DecodeConfig(strategy="greedy", min_tokens=0, no_repeat_ngram=0, max_tokens=max_tokens),
    )

    assert result.tokens[0].tolist() == expected
    assert result.lengths.tolist() == [len(expected)]
    assert result.scores[0].item() == pytest.approx(expected_score, abs=1e-4)
    assert_well_formed(result)


def test_greedy_batch_whose_rows_end_at_different_steps_equals_each_row_alone():
    # Rows that ended leave the batch the model is stepped on; the others must not notice.
    model = bias_token(small_model(), EOS_ID, 0.2)
    sources = random_sources(16, seed=12)

    result = run(model, sources, GREEDY)
    alone = [step_by_step_greedy(model, source, GREEDY.max_tokens) for source in sources]

    assert len(set(result.lengths.tolist())) > 3  # the case under test: varied lengths
    assert_well_formed(result)  # <pad> after each row's <eos>
    for row, length, score, (expected, expected_score) in zip(
        result.tokens.tolist(), result.lengths.tolist(), result.scores.tolist(), alone, strict=True
    ):
        assert row[:length] == expected
        assert score == pytest.approx(expected_score, abs=1e-4)


@pytest.mark.parametrize("strategy", ["greedy", "sample"])
def test_the_model_is_stepped_only_on_rows_that_have_not_ended(strategy):
    model = bias_token(small_model(), EOS_ID, 0.2)
    stepped_rows = 0
    step_log_probs = model.step_log_probs

    def counting_step(tokens, state):
        nonlocal stepped_rows
        stepped_rows += tokens.numel()
        return step_log_probs(tokens, state)

    model.step_log_probs = counting_step
    result = run(
        model,
        random_sources(16, seed=12),
        DecodeConfig(strategy=strategy),
        num_samples=3 if strategy == "sample" else 1,
        generator=torch.Generator().manual_seed(0),
    )

    # One step per token of each reply, its <eos> included, and none after.
    assert stepped_rows == int(result.lengths.sum())
    assert stepped_rows < result.tokens.numel()


def test_beam_of_one_equals_greedy():
    model = small_model()
    sources = random_sources(8, seed=1)
    beam = DecodeConfig(
        strategy="beam", beam_size=1, length_penalty=0.0, min_tokens=0, no_repeat_ngram=0
    )

    greedy_result, beam_result = run(model, sources, GREEDY), run(model, sources, beam)

    assert torch.equal(beam_result.tokens, greedy_result.tokens)
    assert torch.allclose(beam_result.scores, greedy_result.scores, atol=1e-4)


def test_beam_scores_at_least_greedy_without_length_penalty():
    # Not a theorem: pruning can drop the greedy path. It holds when replies end on their own;
    # with the bias at 0 most replies run to max_tokens and 2 of these 32 inputs lose.
    model = bias_token(small_model(), EOS_ID, 0.5)
    sources = random_sources(32, seed=2)
    greedy = DecodeConfig(strategy="greedy", no_repeat_ngram=0)
    beam = DecodeConfig(strategy="beam", beam_size=5, length_penalty=0.0, no_repeat_ngram=0)

    greedy_result, beam_result = run(model, sources, greedy), run(model, sources, beam)

    assert_well_formed(beam_result)
    assert (beam_result.scores >= greedy_result.scores - 1e-4).all()
    assert (beam_result.scores > greedy_result.scores + 1e-3).any()


def test_beam_score_is_the_length_penalised_log_probability_of_the_reply():
    model = bias_token(small_model(), EOS_ID, 0.5)
    sources = random_sources(8, seed=11)
    config = DecodeConfig(strategy="beam", beam_size=4, length_penalty=0.7)

    result = run(model, sources, config)
    batch = make_batch(sources, result.to_lists())
    with torch.inference_mode():
        logits = model(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_mask)  # (N, V)
    token_log_probs = torch.zeros(batch.tgt_out.shape)
    token_log_probs[batch.tgt_mask] = (
        logits.log_softmax(-1).gather(1, batch.tgt_out[batch.tgt_mask].unsqueeze(1)).squeeze(1)
    )
    penalties = torch.tensor([length_penalty(n, 0.7) for n in result.lengths.tolist()])

    assert torch.allclose(result.scores, token_log_probs.sum(1) / penalties, atol=1e-4)


def test_beam_stops_when_no_hypothesis_can_beat_the_best_finished():
    model = bias_token(small_model(), EOS_ID, 8.0)
    config = DecodeConfig(strategy="beam", beam_size=3, length_penalty=1.0, max_tokens=20)
    steps = 0
    step_log_probs = model.step_log_probs

    def counting_step(tokens, state):
        nonlocal steps
        steps += 1
        return step_log_probs(tokens, state)

    model.step_log_probs = counting_step
    result = run(model, random_sources(4, seed=3), config)

    assert result.lengths.tolist() == [2, 2, 2, 2]  # min_tokens 1, then <eos>
    assert steps < config.max_tokens


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_batch_equals_inputs_decoded_alone(strategy):
    model = small_model()
    sources = random_sources(6, seed=4)
    config = DecodeConfig(strategy=strategy, beam_size=3)

    batched = run(model, sources, config)
    alone = [run(model, [source], config) for source in sources]

    assert batched.to_lists() == [result.to_lists()[0] for result in alone]
    expected_scores = torch.cat([result.scores for result in alone])
    assert torch.allclose(batched.scores, expected_scores, atol=1e-4)


@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
def test_no_repeat_ngram_never_repeats_a_bigram(strategy):
    model = bias_token(small_model(), 17, 6.0)  # token 17 nearly always wins
    sources = random_sources(64, seed=5)
    config = DecodeConfig(strategy=strategy, beam_size=3, no_repeat_ngram=2, max_tokens=20)
    unconstrained = DecodeConfig(strategy="greedy", no_repeat_ngram=0, max_tokens=20)

    replies = run(model, sources, config, generator=torch.Generator().manual_seed(0)).to_lists()

    assert any(map(repeats_a_bigram, run(model, sources, unconstrained).to_lists()))
    assert not any(map(repeats_a_bigram, replies))


def test_repeated_ngram_mask_blocks_the_token_closing_a_seen_ngram():
    history = torch.tensor([[5, 6, 7, 5], [5, 5, 5, 5]])

    assert repeated_ngram_mask(history, 2, 10).nonzero().tolist() == [[0, 6], [1, 5]]
    assert not repeated_ngram_mask(history[:1], 3, 10).any()
    assert repeated_ngram_mask(history[:1], 1, 10).nonzero()[:, 1].tolist() == [5, 6, 7]


@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
def test_min_tokens_comes_before_eos(strategy):
    model = bias_token(small_model(), EOS_ID, 10.0)  # <eos> would win at once
    config = DecodeConfig(strategy=strategy, beam_size=3, min_tokens=5)

    result = run(
        model, random_sources(16, seed=6), config, generator=torch.Generator().manual_seed(0)
    )

    assert_well_formed(result)
    assert (result.lengths == config.min_tokens + 1).all()


@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
def test_max_tokens_caps_reply_length(strategy):
    model = bias_token(small_model(), EOS_ID, -10.0)  # <eos> would never win
    config = DecodeConfig(strategy=strategy, beam_size=3, max_tokens=7)

    result = run(
        model, random_sources(16, seed=7), config, generator=torch.Generator().manual_seed(0)
    )

    assert_well_formed(result)
    assert result.tokens.size(1) == config.max_tokens + 1
    assert all(len(reply) == config.max_tokens for reply in result.to_lists())


def test_sampling_is_reproducible_with_a_seeded_generator():
    model = small_model()
    sources = random_sources(8, seed=8)
    config = DecodeConfig(strategy="sample")

    def sample(seed: int) -> DecodeResult:
        return run(model, sources, config, generator=torch.Generator().manual_seed(seed))

    first, again, other = sample(0), sample(0), sample(1)

    assert torch.equal(first.tokens, again.tokens)
    assert torch.equal(first.scores, again.scores)
    assert not torch.equal(first.tokens, other.tokens)
    assert_well_formed(first)


@pytest.mark.parametrize(
    "overrides",
    [{"top_k": 1}, {"temperature": 1e-4}, {"top_p": 1e-6}],
    ids=["top_k=1", "tiny-temperature", "tiny-top_p"],
)
def test_sampling_collapses_to_greedy(overrides):
    model = small_model()
    sources = random_sources(8, seed=9)
    config = DecodeConfig(strategy="sample", **overrides)

    sampled = run(model, sources, config, generator=torch.Generator().manual_seed(0))
    greedy = run(model, sources, DecodeConfig(strategy="greedy"))

    assert torch.equal(sampled.tokens, greedy.tokens)
    assert torch.allclose(sampled.scores, greedy.scores)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sampled_frequencies_match_the_model_probabilities(temperature):
    model = small_model()
    source = [7, 8, 9, 10]
    draws = 20_000
    config = DecodeConfig(
        strategy="sample", temperature=temperature, min_tokens=1, max_tokens=1, no_repeat_ngram=0
    )
    src, src_lengths = encode_inputs([source])
    with torch.inference_mode():
        log_probs, _ = model.step_log_probs(torch.tensor([BOS_ID]), model.start(src, src_lengths))
    blocked = torch.zeros(VOCAB, dtype=torch.bool)
    blocked[[PAD_ID, BOS_ID, EOS_ID]] = True  # never generated; <eos> waits for min_tokens 1
    expected = (log_probs[0] / temperature).masked_fill(blocked, float("-inf")).softmax(-1)

    first_tokens = run(
        model,
        [source],
        config,
        num_samples=draws,
        generator=torch.Generator().manual_seed(0),
    ).tokens[:, 0]
    frequencies = torch.bincount(first_tokens, minlength=VOCAB) / draws

    assert (frequencies[expected == 0] == 0).all()
    # Five standard errors per token: the seed is fixed, and a wrong distribution (a token
    # shifted by one, no temperature) misses by far more.
    tolerance = 5 * (expected * (1 - expected) / draws).sqrt() + 1e-4
    assert ((frequencies - expected).abs() <= tolerance).all()


def test_self_critical_sampling_puts_each_greedy_reply_before_its_samples():
    model = bias_token(small_model(), EOS_ID, 0.2)
    sources = random_sources(8, seed=13)
    config = DecodeConfig(strategy="sample", no_repeat_ngram=0)
    K = 3

    def both(seed: int) -> DecodeResult:
        strategy = SelfCriticalSampling(config, K, generator=torch.Generator().manual_seed(seed))
        return run(model, sources, config, strategy=strategy)

    first, again = both(0), both(0)
    greedy = run(model, sources, DecodeConfig(strategy="greedy", no_repeat_ngram=0))
    rows = torch.arange(first.tokens.size(0)).view(-1, K + 1)  # (B, K + 1)

    assert_well_formed(first)
    assert first.select(rows[:, 0]).to_lists() == greedy.to_lists()
    assert torch.allclose(first.scores[rows[:, 0]], greedy.scores, atol=1e-4)
    assert torch.equal(first.tokens, again.tokens)
    assert torch.equal(first.scores, again.scores)
    assert first.select(rows[:, 1:].reshape(-1)).to_lists() != greedy.to_lists() * K


def test_num_samples_gives_k_rows_per_input_in_input_major_order():
    model = small_model()
    sources = random_sources(3, seed=10)
    K = 4

    samples = run(
        model,
        sources,
        DecodeConfig(strategy="sample"),
        num_samples=K,
        generator=torch.Generator().manual_seed(0),
    )
    argmax_samples = run(
        model,
        sources,
        DecodeConfig(strategy="sample", top_k=1),
        num_samples=K,
        generator=torch.Generator().manual_seed(0),
    )
    greedy = run(model, sources, DecodeConfig(strategy="greedy")).to_lists()

    assert samples.tokens.size(0) == len(sources) * K
    assert len({tuple(reply) for reply in samples.to_lists()[:K]}) > 1  # independent draws
    assert argmax_samples.to_lists() == [reply for reply in greedy for _ in range(K)]


def test_generate_returns_reply_ids_without_specials_and_keeps_training_mode():
    model = small_model().train()
    sources = [[5, 6, 7], [], [8]]

    replies = generate(model, sources, DecodeConfig(strategy="beam", beam_size=2))

    assert model.training
    assert len(replies) == len(sources)
    assert all(reply and not {PAD_ID, BOS_ID, EOS_ID} & set(reply) for reply in replies)


def test_make_strategy_rejects_samples_without_sampling():
    with pytest.raises(ValueError, match="num_samples"):
        make_strategy(DecodeConfig(strategy="greedy"), num_samples=4)
    assert isinstance(make_strategy(DecodeConfig(strategy="beam")), BeamSearch)


@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.95, 0.999])
def test_the_nucleus_found_among_the_best_tokens_is_the_full_sorts(top_p):
    from rlchat.decoding.sampling import NUCLEUS_SEARCH, nucleus

    g = torch.Generator().manual_seed(int(top_p * 1000))
    peaked = torch.randn(6, 3000, generator=g) * 6.0  # the nucleus is a few tokens
    flat = torch.randn(2, 3000, generator=g) * 0.1  # it needs far more than NUCLEUS_SEARCH
    logits = torch.cat([peaked, flat])
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    drop = probs.cumsum(-1) - probs >= top_p
    drop[:, 0] = False
    expected = torch.zeros_like(drop).scatter(1, order, drop)
    kept = torch.isfinite(nucleus(logits, top_p))
    assert torch.equal(kept, ~expected)
    assert int(kept[-1].sum()) > NUCLEUS_SEARCH[0]  # the flat rows searched further


@pytest.mark.parametrize("tries", [2, 0])  # 0: every row takes the exact filter
def test_nucleus_draws_follow_the_renormalised_nucleus(tries):
    from rlchat.decoding.sampling import nucleus, nucleus_sample

    g = torch.Generator().manual_seed(3)
    logits = (torch.randn(1, 12, generator=g) * 1.5).expand(40_000, 12).contiguous()
    draws = nucleus_sample(logits, 0.8, torch.Generator().manual_seed(0), tries=tries)
    kept = torch.isfinite(nucleus(logits[:1], 0.8))[0]
    assert kept.sum() < 12 and bool(kept[draws].all())  # nothing outside the nucleus
    expected = logits[0].masked_fill(~kept, float("-inf")).softmax(-1)
    seen = torch.bincount(draws, minlength=12).double() / len(draws)
    # 40,000 draws: a share's standard error is at most 0.0025.
    torch.testing.assert_close(seen, expected.double(), atol=0.012, rtol=0)
    again = nucleus_sample(logits, 0.8, torch.Generator().manual_seed(0), tries=tries)
    assert torch.equal(draws, again)  # seeded: the same draws


def test_a_tiny_nucleus_is_the_best_token_whatever_the_draw():
    from rlchat.decoding.sampling import nucleus_sample

    logits = torch.tensor([[0.0, 0.1, 0.2, 3.0]]).expand(500, 4)
    draws = nucleus_sample(logits, 0.01, torch.Generator().manual_seed(1))
    assert bool((draws == 3).all())
