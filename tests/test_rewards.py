from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

from rlchat.batching import encode_inputs, make_batch
from rlchat.config import ModelConfig, TokenizerConfig
from rlchat.metrics import bleu2
from rlchat.model import Seq2Seq
from rlchat.rewards import (
    REWARD_NAMES,
    RewardFunction,
    coherence,
    dull_penalty,
    generic_penalty,
    parse_reward_spec,
    repeat_penalty,
    stock_penalty,
)
from rlchat.scoring import sequence_log_likelihood
from rlchat.text import stock_replies
from rlchat.tokenizer import BOS_ID, EOS_ID, train_tokenizer

VOCAB = 30
DULL = [[10, 11, 12], [10, 13]]


def words(text: str) -> list[str]:
    return text.split()


def nltk_bleu2(hypothesis, references) -> float:
    return sentence_bleu(
        references, hypothesis, weights=(0.5, 0.5), smoothing_function=SmoothingFunction().method1
    )


def tiny_model(seed: int = 0, **overrides) -> Seq2Seq:
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=VOCAB, embedding_dim=8, hidden_size=16, dropout=0.0)
    for name, value in overrides.items():
        setattr(config, name, value)
    return Seq2Seq(config)


def step_by_step_log_likelihood(model: Seq2Seq, source: list[int], target: list[int]) -> float:
    """Mean log-prob of target + <eos>, one decoder step at a time, teacher-forced."""
    src, lengths = encode_inputs([source])
    with torch.no_grad():
        state = model.start(src, lengths)
        tokens = torch.tensor([BOS_ID])
        total = 0.0
        for gold in [*target, EOS_ID]:
            log_probs, state = model.step_log_probs(tokens, state)
            total += log_probs[0, gold].item()
            tokens = torch.tensor([gold])
    return total / (len(target) + 1)


def random_pairs(count: int, seed: int) -> tuple[list[list[int]], list[list[int]]]:
    rng = random.Random(seed)

    def sequence(shortest: int) -> list[int]:
        return [rng.randrange(5, VOCAB) for _ in range(rng.randint(shortest, 7))]

    return [sequence(0) for _ in range(count)], [sequence(0) for _ in range(count)]


# --------------------------------------------------------------------------- bleu2


@pytest.mark.parametrize("alphabet", [list(range(5)), ["a", "b", "c", "d", "e"]])
def test_bleu2_equals_nltk_on_random_sets(alphabet):
    rng = random.Random(1)

    def sentence() -> list:
        return [rng.choice(alphabet) for _ in range(rng.randint(0, 12))]

    hypotheses = [sentence() for _ in range(500)]
    references = [[sentence() for _ in range(rng.randint(1, 3))] for _ in range(500)]
    ours = bleu2(hypotheses, references)
    for score, hypothesis, refs in zip(ours, hypotheses, references, strict=True):
        assert score == pytest.approx(nltk_bleu2(hypothesis, refs), abs=1e-9, rel=0)


@pytest.mark.parametrize(
    ("hypothesis", "references"),
    [
        ([], [["a", "b"]]),  # empty hypothesis: 0
        (["a"], [["a"]]),  # one token: the bigram precision is smoothed, not undefined
        (["a"], [["b", "a", "c"]]),  # one token, shorter than the reference
        (["x", "y"], [["a", "b"]]),  # no match at all: 0
        (["a", "b"], [[], ["a", "b", "c"]]),  # an empty reference among others
        (["a", "b", "c"], [["a", "b"], ["a", "b", "c", "d"]]),  # tie in closest length
        (["a", "a", "a", "a"], [["a", "a"]]),  # clipping
    ],
)
def test_bleu2_equals_nltk_on_edge_cases(hypothesis, references):
    assert bleu2([hypothesis], [references])[0] == pytest.approx(
        nltk_bleu2(hypothesis, references), abs=1e-12, rel=0
    )


def test_bleu2_is_one_for_an_exact_match_and_zero_without_overlap():
    assert bleu2([[1, 2, 3]], [[[1, 2, 3]]]) == [1.0]
    assert bleu2([[1, 2, 3]], [[[4, 5, 6]]]) == [0.0]


def test_bleu2_needs_a_reference_per_hypothesis():
    with pytest.raises(ValueError, match="reference"):
        bleu2([[1, 2]], [])
    with pytest.raises(ValueError, match="at least one reference"):
        bleu2([[1, 2]], [[]])


# --------------------------------------------------------------------------- repeat_penalty


def test_repeat_penalty_punishes_a_loop_more_than_a_varied_reply():
    source = words("where are you going ?")
    looped, varied = words("gonna gonna gonna"), words("i am gonna leave")
    loop_score, varied_score = repeat_penalty([looped, varied], [source, source])
    assert loop_score == pytest.approx(-0.5)  # one of the two bigrams repeats
    assert varied_score == 0.0
    longer_loop = repeat_penalty([["gonna"] * 6], [source])[0]
    assert longer_loop < loop_score


def test_repeat_penalty_punishes_an_echo_of_the_input():
    source = words("do you want to come with me ?")
    echo, half_echo, answer = (
        list(source),
        words("you want to come ? no"),
        words("no , i am staying here"),
    )
    scores = repeat_penalty([echo, half_echo, answer], [source] * 3)
    assert scores[0] == -1.0
    assert -1.0 < scores[1] < 0.0
    assert scores[2] == 0.0


def test_repeat_penalty_allows_a_few_common_tokens():
    reply = words("the man and the dog , the end")  # "the" three times: one beyond two
    (score,) = repeat_penalty([reply], [["hello"]])
    assert score == pytest.approx(-1 / len(reply))
    assert repeat_penalty([reply], [["hello"]], max_token_count=3) == [0.0]


def test_repeat_penalty_stays_in_range_and_zero_for_empty_replies():
    rng = random.Random(0)
    hypotheses = [[rng.randrange(4) for _ in range(rng.randint(0, 10))] for _ in range(300)]
    sources = [[rng.randrange(4) for _ in range(rng.randint(0, 10))] for _ in range(300)]
    scores = repeat_penalty(hypotheses, sources)
    assert all(-1.0 <= s <= 0.0 for s in scores)
    assert repeat_penalty([[]], [[1, 2]]) == [0.0]


# --------------------------------------------------------------------------- generic_penalty


def test_generic_penalty_is_zero_for_replies_sharing_no_bigram():
    sources = [words("where are you going ?"), words("how are you ?")]
    scores = generic_penalty([words("to the bus ."), words("fine , thanks")], sources)
    assert scores == [0.0, 0.0]


def test_generic_penalty_is_the_mean_share_of_other_inputs_holding_each_bigram():
    catch_all, specific = words("i don't know ."), words("the bus leaves at ten")
    sources = [words("where ?"), words("how ?"), words("when ?")]
    scores = generic_penalty([catch_all, catch_all, specific], sources)
    # Each of the catch-all's 5 bigrams (bounds included) is held by 1 of 2 other inputs.
    assert scores[:2] == [pytest.approx(-0.5), pytest.approx(-0.5)]
    assert scores[2] == 0.0
    assert generic_penalty([catch_all] * 3, sources) == [-1.0] * 3
    # A template shares some bigrams: "<s> you" and "you are" of the 5 in "you are the cat".
    template = generic_penalty([words("you are the cat"), words("you are so late")], sources[:2])
    assert template == [pytest.approx(-2 / 5), pytest.approx(-2 / 5)]


def test_generic_penalty_total_sums_the_shares_so_common_padding_costs():
    sources = [words("where ?"), words("how ?"), words("when ?")]
    short, padded = words("i don't know ."), words("i don't know . i don't know why")
    others = [words("i don't know ."), words("i don't know why")]
    mean_short, mean_padded = (
        generic_penalty([short, *others], sources)[0],
        generic_penalty([padded, *others], sources)[0],
    )
    total_short, total_padded = (
        generic_penalty([short, *others], sources, total=True)[0],
        generic_penalty([padded, *others], sources, total=True)[0],
    )
    # The sum is the mean times the bigram count (bounds included: 5 and 9 bigrams).
    assert total_short == pytest.approx(5 * mean_short)
    assert total_padded == pytest.approx(9 * mean_padded)
    # Averaging lets common padding pass nearly free; summing charges every shared bigram.
    assert total_padded < total_short
    assert generic_penalty([words("the bus"), words("at ten")], sources[:2], total=True) == [
        0.0,
        0.0,
    ]


def test_generic_penalty_counts_rows_of_one_input_once():
    # K samples and the greedy reply of one input: the same reply twice is not generic.
    source, other = words("hello ?"), words("bye .")
    reply = words("hi .")
    scores = generic_penalty(
        [reply, reply, reply, words("see you")], [source, source, source, other]
    )
    assert scores == [0.0, 0.0, 0.0, 0.0]
    assert generic_penalty([reply, reply, reply], [source, source, other]) == [-1.0] * 3


def test_generic_penalty_is_zero_for_one_input_and_checks_lengths():
    assert generic_penalty([[1], [1]], [[2], [2]]) == [0.0, 0.0]
    assert generic_penalty([], []) == []
    with pytest.raises(ValueError, match="2 hypotheses but 1 sources"):
        generic_penalty([[1], [2]], [[3]])


# --------------------------------------------------------------------------- model rewards


@pytest.mark.parametrize("input_feeding", [False, True])
def test_sequence_log_likelihood_matches_step_by_step_decoding(input_feeding):
    model = tiny_model(input_feeding=input_feeding)
    sources, targets = random_pairs(12, seed=input_feeding)
    batched = sequence_log_likelihood(model, sources, targets, "cpu", batch_size=5)
    manual = [
        step_by_step_log_likelihood(model, s, t) for s, t in zip(sources, targets, strict=True)
    ]
    assert batched.shape == (12,)
    assert batched.tolist() == pytest.approx(manual, abs=1e-5)


def test_mutual_reward_is_forward_plus_backward_per_token_log_likelihood():
    """Li et al.'s semantic coherence, against a step-by-step computation with both models."""
    forward, backward = tiny_model(seed=1), tiny_model(seed=2)
    sources, replies = random_pairs(10, seed=5)
    sources = [s or [7] for s in sources]  # an input has at least one token
    reward = RewardFunction({"mutual": 1.0}, model=forward, backward=backward)
    total, parts = reward(replies, sources, [[r] for r in replies])
    for i, (source, reply) in enumerate(zip(sources, replies, strict=True)):
        expected = step_by_step_log_likelihood(forward, source, reply)
        expected += step_by_step_log_likelihood(backward, reply or [EOS_ID], source)
        assert parts["mutual"][i].item() == pytest.approx(expected, abs=1e-5)
        assert total[i].item() == pytest.approx(expected, abs=1e-5)
    # The backward term is what tells a reply that fits this input from one that fits any.
    forward_only = RewardFunction({"coherence": 1.0}, model=forward)
    assert not torch.allclose(forward_only(replies, sources, [[r] for r in replies])[0], total)


def test_mutual_reward_needs_a_backward_model():
    with pytest.raises(ValueError, match="backward model"):
        RewardFunction({"mutual": 1.0}, model=tiny_model())


@pytest.mark.parametrize("batch_size", [None, 7, 512])
def test_sequence_log_likelihood_batched_equals_one_at_a_time(batch_size):
    model = tiny_model()
    sources, targets = random_pairs(20, seed=3)
    batched = sequence_log_likelihood(model, sources, targets, "cpu", batch_size=batch_size)
    single = torch.cat(
        [
            sequence_log_likelihood(model, [s], [t], "cpu")
            for s, t in zip(sources, targets, strict=True)
        ]
    )
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)


def test_sequence_log_likelihood_scores_without_dropout_and_restores_the_mode():
    model = tiny_model(dropout=0.5)
    model.train()
    sources, targets = random_pairs(6, seed=4)
    first = sequence_log_likelihood(model, sources, targets, "cpu")
    second = sequence_log_likelihood(model, sources, targets, "cpu")
    assert model.training
    torch.testing.assert_close(first, second)


def test_dull_penalty_is_minus_the_mean_log_likelihood_of_the_dull_replies():
    model = tiny_model()
    candidates = [[5, 6, 7], [8], []]
    scores = dull_penalty(model, candidates, DULL, "cpu")
    for candidate, score in zip(candidates, scores, strict=True):
        log_likelihood = sequence_log_likelihood(model, [candidate] * len(DULL), DULL, "cpu")
        assert score == pytest.approx(-log_likelihood.mean().item(), abs=1e-6)
    assert all(s > 0 for s in scores)  # log-probabilities are negative


def test_dull_penalty_rewards_a_candidate_after_which_dull_replies_are_unlikely():
    model = tiny_model(seed=1)
    invites_dull, invites_other = [5, 6, 7], [8, 9]
    batch = make_batch([invites_dull, invites_other], [DULL[0], [20, 21, 22]])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(25):
        logits = model(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_mask)
        loss = F.cross_entropy(logits, batch.tgt_out[batch.tgt_mask])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after_dull, after_other = dull_penalty(model, [invites_dull, invites_other], DULL[:1], "cpu")
    assert after_other > after_dull + 0.5  # nats per token


def test_coherence_is_the_log_likelihood_of_the_reply_given_the_source():
    model = tiny_model()
    sources, replies = random_pairs(4, seed=5)
    expected = [
        step_by_step_log_likelihood(model, s, r) for s, r in zip(sources, replies, strict=True)
    ]
    assert coherence(model, sources, replies, "cpu") == pytest.approx(expected, abs=1e-5)


# --------------------------------------------------------------------------- combination


def test_parse_reward_spec_reads_names_and_weights():
    assert parse_reward_spec("bleu=1.0, dull=0.5 ,repeat=0.2") == {
        "bleu": 1.0,
        "dull": 0.5,
        "repeat": 0.2,
    }
    assert parse_reward_spec("coherence=-1e-1") == {"coherence": -0.1}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("bleu=1,fun=2", "unknown reward 'fun'.*bleu, dull, repeat, coherence"),
        ("bleu", "'bleu' is not NAME=WEIGHT"),
        ("bleu=1,", "'' is not NAME=WEIGHT"),
        ("", "not NAME=WEIGHT"),
        ("=1", "'=1' is not NAME=WEIGHT"),
        ("bleu=high", "weight 'high' of reward 'bleu' is not a number"),
        ("bleu=nan", "must be finite"),
        ("bleu=1,bleu=2", "given twice"),
    ],
)
def test_parse_reward_spec_names_the_bad_part(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_reward_spec(spec)


def test_reward_function_sums_weighted_components_and_returns_each():
    model = tiny_model()
    weights = {
        "bleu": 1.0,
        "repeat": 0.5,
        "dull": 0.1,
        "coherence": 0.2,
        "generic": 0.3,
        "shared": 0.05,
    }
    reward = RewardFunction(weights, model=model, dull_replies=DULL)
    replies = [[5, 6, 7], [9, 9, 9, 9], [5, 6, 7]]  # the first and last share a reply
    sources = [[8, 9], [9, 9, 9, 9], [7]]
    references = [[[5, 6, 7]], [[10, 11], [12]], [[5, 8]]]
    total, components = reward(replies, sources, references)
    parts = {
        "bleu": bleu2(replies, references),
        "repeat": repeat_penalty(replies, sources),
        "dull": dull_penalty(model, replies, DULL, "cpu"),
        "coherence": coherence(model, sources, replies, "cpu"),
        "generic": generic_penalty(replies, sources),
        "shared": generic_penalty(replies, sources, total=True),
    }
    expected = [sum(weights[k] * parts[k][i] for k in weights) for i in range(len(replies))]
    assert total.shape == (3,) and total.dtype == torch.float32
    assert total.tolist() == pytest.approx(expected, abs=1e-5)
    # stock reads text, mutual needs a backward model: both tested on their own
    assert set(components) == set(REWARD_NAMES) - {"stock", "mutual"}
    for name, values in parts.items():
        assert components[name].tolist() == pytest.approx(values, abs=1e-5)


def test_reward_function_without_model_rewards_needs_no_model():
    total, components = RewardFunction({"bleu": 2.0})([[1, 2]], [[3]], [[[1, 2]]])
    assert total.tolist() == [2.0]
    assert components["bleu"].tolist() == [1.0]


def test_reward_function_checks_its_configuration():
    with pytest.raises(ValueError, match="need a frozen model"):
        RewardFunction({"bleu": 1.0, "dull": 1.0})
    with pytest.raises(ValueError, match="dull replies"):
        RewardFunction({"dull": 1.0}, model=tiny_model())
    with pytest.raises(ValueError, match="unknown rewards"):
        RewardFunction({"fun": 1.0})
    with pytest.raises(ValueError, match="no reward"):
        RewardFunction({})


# --------------------------------------------------------------------------- stock replies

TRAINING_REPLIES = ["What?", "what?!", "Yes.", "What?", "Yes!", "I'll be there at noon.", "No."]


def test_stock_replies_are_the_dull_list_and_the_commonest_training_replies():
    stock = stock_replies(TRAINING_REPLIES, k=2)
    assert {"what", "yes"} <= stock  # "What?" x3, "Yes." x2; "No." x1 is not among the top 2
    assert "no" not in stock and "i'll be there at noon" not in stock
    assert "i don't know" in stock and "you know what i mean" in stock  # Li et al.'s list


def test_stock_penalty_prices_exactly_the_stock_replies_in_any_case_or_punctuation():
    stock = stock_replies(TRAINING_REPLIES, k=2)
    replies = ["I don't know.", "i don't know why she left", "WHAT?!", "what time is it?", ""]
    assert stock_penalty(replies, stock) == [-1.0, 0.0, -1.0, 0.0, 0.0]


def test_reward_function_scores_stock_replies_through_the_tokenizer():
    texts = ["i don't know .", "what ?", "the train leaves at noon ."]
    tokenizer = train_tokenizer(texts, TokenizerConfig(kind="word", min_count=1))
    stock = stock_replies(["What?", "What?", "Sure."], k=1)
    reward = RewardFunction({"stock": 0.5}, tokenizer=tokenizer, stock=stock)
    replies = tokenizer.encode_batch(texts)
    total, parts = reward(replies, [[5]] * 3, [[[5]]] * 3)
    assert parts["stock"].tolist() == [-1.0, -1.0, 0.0]
    assert total.tolist() == [-0.5, -0.5, 0.0]
    with pytest.raises(ValueError, match="stock"):
        RewardFunction({"stock": 0.5}, tokenizer=tokenizer)
