from __future__ import annotations

import copy

import pytest
import torch

from rlchat.config import CrossEntropyConfig, DataConfig, ModelConfig, RLConfig, TokenizerConfig
from rlchat.corpus import load_corpus
from rlchat.dataset import Example, prepare_dataset
from rlchat.model import Seq2Seq
from rlchat.rewards import RewardFunction
from rlchat.runs import RunDir
from rlchat.train.cross_entropy import CrossEntropyTrainer
from rlchat.train.scst import SCSTTrainer, collect_references, sample_log_probs

TARGET = 7


class TokenReward:
    """Share of a reply's tokens that are TARGET: a reward with one obvious optimum."""

    weights = {"target": 1.0}

    def __call__(self, replies, sources, references):
        values = torch.tensor([sum(t == TARGET for t in r) / max(1, len(r)) for r in replies])
        return values, {"target": values}


class ConstantReward:
    weights = {"constant": 1.0}

    def __call__(self, replies, sources, references):
        values = torch.ones(len(replies))
        return values, {"constant": values}


def toy_examples(n: int = 32) -> list[Example]:
    g = torch.Generator().manual_seed(0)
    return [
        Example(source=torch.randint(5, 12, (4,), generator=g).tolist(), reply=[8, 9], pair=None)
        for _ in range(n)
    ]


def scst_trainer(tmp_path, model, examples, reward, **config) -> SCSTTrainer:
    # Pure SCST unless a test asks for the mixed objective.
    defaults = dict(
        batch_size=16, samples=4, lr=1e-2, max_tokens=5, max_eval_pairs=16, ce_weight=0.0
    )
    return SCSTTrainer(
        reward=reward,
        run=RunDir(tmp_path),
        run_config={"stage": "rl"},
        tokenizer_json="{}",
        model=model,
        train_examples=examples,
        valid_examples=examples,
        config=RLConfig(**(defaults | config)),
        device=torch.device("cpu"),
        tensorboard=False,
    )


def toy_model() -> Seq2Seq:
    torch.manual_seed(0)
    return Seq2Seq(ModelConfig(vocab_size=12, embedding_dim=8, hidden_size=16, dropout=0.0))


@pytest.mark.parametrize("baseline", ["greedy", "mean"])
def test_a_policy_learns_to_emit_the_rewarded_token(tmp_path, baseline):
    examples = toy_examples()
    trainer = scst_trainer(
        tmp_path,
        toy_model(),
        examples,
        TokenReward(),
        baseline=baseline,
        lr=3e-3,
        select_by="reward",
    )
    before, _ = trainer.evaluate()
    for step in range(20):
        trainer.train_step(examples[(step % 2) * 16 : (step % 2 + 1) * 16], total_steps=20)
    after, figures = trainer.evaluate()
    # The score is minus the greedy reward: lower is better.
    assert after < before
    assert figures["valid/reward"] > 0.8


@pytest.mark.parametrize("select_by", ["bleu2", "reward"])
def test_the_best_checkpoint_follows_the_named_validation_criterion(tmp_path, select_by):
    examples = toy_examples()
    trainer = scst_trainer(tmp_path, toy_model(), examples, TokenReward(), select_by=select_by)
    score, figures = trainer.evaluate()
    assert score == pytest.approx(-figures[f"valid/{select_by}"])
    assert 0.0 < figures["valid/top1"] <= 1.0
    # A validation that betters the best score so far saves best/; one that does not, doesn't.
    trainer.state.best_score = score + 1.0
    trainer.validate()
    assert (tmp_path / "best").is_dir()
    trainer.state.best_score = score - 1.0
    saved = (tmp_path / "best").stat().st_mtime_ns
    trainer.validate()
    assert (tmp_path / "best").stat().st_mtime_ns == saved


def test_rl_selects_by_bleu2_by_default():
    assert RLConfig().select_by == "bleu2"


def test_advantage_zero_means_no_gradient(tmp_path):
    examples = toy_examples(16)
    trainer = scst_trainer(tmp_path, toy_model(), examples, ConstantReward())
    loss, figures = trainer.loss(examples)
    loss.backward()
    assert figures["rl/advantage_abs"] == 0.0
    assert all(p.grad is None or not p.grad.any() for p in trainer.model.parameters())


def test_the_loss_pushes_up_samples_that_beat_the_baseline(tmp_path):
    """One step with a positive advantage raises the log-prob of the rewarded token."""
    examples = toy_examples(16)
    model = toy_model()
    trainer = scst_trainer(tmp_path, model, examples, TokenReward(), lr=1e-3)

    def target_log_prob() -> float:
        from rlchat.batching import encode_inputs
        from rlchat.tokenizer import BOS_ID

        src, lengths = encode_inputs([e.source for e in examples])
        with torch.no_grad():
            state = model.start(src, lengths)
            log_probs, _ = model.step_log_probs(torch.full((len(examples),), BOS_ID), state)
        return log_probs[:, TARGET].mean().item()

    before = target_log_prob()
    trainer.train_step(examples, total_steps=1)
    assert target_log_prob() > before


def test_the_mixed_objective_adds_the_weighted_reference_cross_entropy(tmp_path):
    examples = toy_examples(16)
    losses = {}
    for weight in (0.0, 0.5):
        trainer = scst_trainer(
            tmp_path / str(weight), toy_model(), examples, TokenReward(), ce_weight=weight
        )
        torch.manual_seed(3)  # the same samples for both weights
        losses[weight] = trainer.loss(examples)
    (pure, _), (mixed, figures) = losses[0.0], losses[0.5]
    assert "rl/ce_loss" not in losses[0.0][1]
    assert figures["rl/ce_loss"] > 1.0  # an untrained model is far from the references
    assert mixed.item() == pytest.approx(pure.item() + 0.5 * figures["rl/ce_loss"], rel=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sample_log_probs_score_the_constrained_tempered_policy_that_drew_them(temperature):
    from rlchat.batching import encode_inputs
    from rlchat.config import DecodeConfig
    from rlchat.decoding import DecodeResult
    from rlchat.tokenizer import BOS_ID, EOS_ID, PAD_ID

    model = toy_model().eval()
    config = DecodeConfig(strategy="sample", temperature=temperature, min_tokens=1, max_tokens=2)
    src, lengths = encode_inputs([[5, 6, 7], [8, 9]])
    # K=2 per input; the first reply hits the length cap, where <eos> is forced.
    replies = [[10, 11, EOS_ID], [9, EOS_ID, PAD_ID], [6, EOS_ID, PAD_ID], [6, 6, EOS_ID]]
    samples = DecodeResult(
        tokens=torch.tensor(replies), lengths=torch.tensor([3, 2, 2, 3]), scores=torch.zeros(4)
    )
    summed, counts, _, _ = sample_log_probs(model, src, lengths, samples, 2, config)
    expected = []
    with torch.no_grad():
        for row, reply in enumerate(replies):
            state = model.start(src[row // 2 : row // 2 + 1], lengths[row // 2 : row // 2 + 1])
            token, total = torch.tensor([BOS_ID]), 0.0
            for position, gold in enumerate(reply[: int(samples.lengths[row])]):
                log_probs, state = model.step_log_probs(token, state)  # (1, V) at T = 1
                logits = log_probs[0] / temperature
                logits[[PAD_ID, BOS_ID]] = float("-inf")
                if position < config.min_tokens:
                    logits[EOS_ID] = float("-inf")
                if position < config.max_tokens:  # at the cap <eos> is certain: log-prob 0
                    total += torch.log_softmax(logits, dim=-1)[gold].item()
                token = torch.tensor([gold])
            expected.append(total)
    assert summed.tolist() == pytest.approx(expected, abs=1e-5)
    assert counts.tolist() == [3.0, 2.0, 2.0, 3.0]


def test_references_group_every_reply_of_a_repeated_input():
    a = Example(source=[5, 6], reply=[7], pair=None)
    b = Example(source=[5, 6], reply=[8, 9], pair=None)
    c = Example(source=[10], reply=[11], pair=None)
    assert collect_references([a, b, c]) == {(5, 6): [[7], [8, 9]], (10,): [[11]]}


@pytest.fixture(scope="module")
def comedy_ce(corpus_dir, tmp_path_factory):
    """A small CE model on real comedy pairs: the starting point RL must improve on."""
    corpus = load_corpus(corpus_dir)
    dataset = prepare_dataset(
        corpus, DataConfig(genres=["comedy"]), TokenizerConfig(vocab_size=500, max_tokens=10)
    )
    torch.manual_seed(0)
    model = Seq2Seq(
        ModelConfig(vocab_size=dataset.tokenizer.vocab_size, embedding_dim=32, hidden_size=64)
    )
    trainer = CrossEntropyTrainer(
        run=RunDir(tmp_path_factory.mktemp("ce")),
        run_config={},
        tokenizer_json="{}",
        model=model,
        train_examples=dataset.splits["train"].examples[:3000],
        valid_examples=dataset.splits["valid"].examples[:200],
        config=CrossEntropyConfig(batch_size=32, max_steps=150),
        device=torch.device("cpu"),
        tensorboard=False,
    )
    trainer.fit(progress=False)
    return dataset, trainer.model


def mean_sampled_reward(trainer: SCSTTrainer, examples: list[Example], seed: int) -> float:
    torch.manual_seed(seed)
    with torch.no_grad():
        return float(
            torch.tensor(
                [trainer.loss(examples[i : i + 32])[1]["rl/reward_sample"] for i in (0, 32, 64)]
            ).mean()
        )


def test_rl_on_real_pairs_raises_the_mean_sampled_reward(tmp_path, comedy_ce):
    dataset, model = comedy_ce
    examples = dataset.splits["train"].examples[:96]
    trainer = scst_trainer(
        tmp_path,
        copy.deepcopy(model),  # the fixture's CE model is shared with the next test
        examples,
        RewardFunction({"bleu": 1.0, "repeat": 0.5}),
        batch_size=32,
        lr=2e-3,
        max_tokens=10,
    )
    before = mean_sampled_reward(trainer, examples, seed=1)
    params = [p.detach().clone() for p in trainer.model.parameters()]
    for step in range(60):
        trainer.train_step(examples[(step % 3) * 32 : (step % 3 + 1) * 32], total_steps=60)
    after = mean_sampled_reward(trainer, examples, seed=1)
    assert any(
        not torch.equal(a, b) for a, b in zip(params, trainer.model.parameters(), strict=True)
    )
    assert after > 1.5 * before


def test_rl_with_the_generic_reward_makes_greedy_replies_less_alike(tmp_path, comedy_ce):
    dataset, model = comedy_ce
    examples = dataset.splits["train"].examples[:96]
    trainer = scst_trainer(
        tmp_path,
        copy.deepcopy(model),
        examples,
        RewardFunction({"generic": 1.0}),
        batch_size=32,
        lr=2e-3,
        max_tokens=10,
    )
    _, before = trainer.evaluate()  # greedy replies to the 96 inputs, judged together
    for step in range(60):
        trainer.train_step(examples[(step % 3) * 32 : (step % 3 + 1) * 32], total_steps=60)
    _, after = trainer.evaluate()
    assert before["valid/reward_generic"] < -0.2  # a small CE bot gives most inputs one reply
    assert after["valid/reward_generic"] > before["valid/reward_generic"] + 0.1
