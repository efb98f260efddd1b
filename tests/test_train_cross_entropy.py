from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import replace

import pytest
import torch

from rlchat.batching import make_batch
from rlchat.config import CrossEntropyConfig, DataConfig, ModelConfig, TokenizerConfig
from rlchat.corpus import load_corpus
from rlchat.dataset import prepare_dataset
from rlchat.model import Seq2Seq
from rlchat.runs import RunDir, RunError
from rlchat.tokenizer import BOS_ID, UNK_ID
from rlchat.train.cross_entropy import (
    CrossEntropyTrainer,
    drop_words,
    evaluate_loss,
    train_cross_entropy,
)


@pytest.fixture(scope="module")
def comedy(corpus_dir):
    corpus = load_corpus(corpus_dir)
    dataset = prepare_dataset(
        corpus, DataConfig(genres=["comedy"]), TokenizerConfig(vocab_size=600, max_tokens=12)
    )
    return corpus, dataset


def small_model(vocab_size: int) -> Seq2Seq:
    torch.manual_seed(0)
    return Seq2Seq(ModelConfig(vocab_size=vocab_size, embedding_dim=32, hidden_size=64))


def make_trainer(
    tmp_path, dataset, config: CrossEntropyConfig, n_train=2000
) -> CrossEntropyTrainer:
    return CrossEntropyTrainer(
        run=RunDir(tmp_path),
        run_config={"stage": "ce"},
        tokenizer_json=dataset.tokenizer.to_json(),
        model=small_model(dataset.tokenizer.vocab_size),
        train_examples=dataset.splits["train"].examples[:n_train],
        valid_examples=dataset.splits["valid"].examples[:300],
        config=config,
        device=torch.device("cpu"),
        tensorboard=False,
    )


def confident_start(tmp_path, dataset) -> CrossEntropyTrainer:
    """A model trained until its greedy replies are confident: unlikelihood pushes on what
    the model is sure of."""
    start = make_trainer(
        tmp_path / "start", dataset, CrossEntropyConfig(batch_size=32, max_steps=150)
    )
    start.fit(progress=False)
    return start


def greedy_replies(trainer: CrossEntropyTrainer, sources) -> list[list[int]]:
    from rlchat.batching import encode_inputs
    from rlchat.decoding import decode

    trainer.model.eval()
    with torch.no_grad():
        return decode(trainer.model, *encode_inputs(sources), trainer.greedy).to_lists()


def from_start(start: CrossEntropyTrainer, *trainers: CrossEntropyTrainer) -> None:
    for trainer in trainers:
        trainer.model.load_state_dict(start.model.state_dict())


def step_side_by_side(baseline, treated, batch, steps: int) -> dict[str, float]:
    """Both trainers take `steps` steps on the same batch; the treated one's last figures."""
    figures = {}
    for _ in range(steps):
        baseline.train_step(batch, total_steps=steps)
        figures = treated.train_step(batch, total_steps=steps)
    return figures


def test_training_lowers_validation_loss_and_changes_parameters(tmp_path, comedy):
    _, dataset = comedy
    trainer = make_trainer(tmp_path, dataset, CrossEntropyConfig(batch_size=32, max_steps=250))
    before_params = [p.detach().clone() for p in trainer.model.parameters()]
    before = evaluate_loss(trainer.model, trainer.valid_examples, trainer.device)["loss"]
    summary = trainer.fit(progress=False)
    assert summary["steps"] == 250
    assert summary["valid"]["valid/loss"] < before - 1.0
    assert any(
        not torch.equal(a, b)
        for a, b in zip(before_params, trainer.model.parameters(), strict=True)
    )
    assert (tmp_path / "best" / "model.safetensors").is_file()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("valid/loss" in r for r in records) and any("ce/loss" in r for r in records)


@pytest.mark.parametrize("word_dropout", [0.0, 0.25])
def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, comedy, word_dropout):
    _, dataset = comedy
    config = CrossEntropyConfig(
        batch_size=32, epochs=2, checkpoint_every=15, eval_every=20, word_dropout=word_dropout
    )
    straight = make_trainer(tmp_path / "a", dataset, config, n_train=1200)
    straight.fit(progress=False)

    interrupted = make_trainer(tmp_path / "b", dataset, config, n_train=1200)

    def stop_at_step_43(trainer):  # mid-epoch, between checkpoints: as a Ctrl-C would
        trainer.stop_requested = trainer.state.step == 43

    interrupted.on_step = stop_at_step_43
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(progress=False)

    resumed = make_trainer(tmp_path / "b", dataset, config, n_train=1200)
    assert resumed.resume()
    assert resumed.state.step == 43
    resumed.fit(progress=False)
    for a, b in zip(
        straight.model.state_dict().values(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").open()]
    assert steps == sorted(steps)


def test_same_seed_same_numbers(tmp_path, comedy):
    _, dataset = comedy
    config = CrossEntropyConfig(batch_size=32, max_steps=30)
    first = make_trainer(tmp_path / "a", dataset, config).fit(progress=False)
    second = make_trainer(tmp_path / "b", dataset, config).fit(progress=False)
    assert first["valid"] == second["valid"]


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_good_one(tmp_path, comedy):
    _, dataset = comedy
    config = CrossEntropyConfig(batch_size=32, max_steps=20, checkpoint_every=10)
    make_trainer(tmp_path, dataset, config).fit(progress=False)
    run = RunDir(tmp_path)
    latest, previous = run.step_checkpoints()[:2]
    (latest / "model.safetensors").write_bytes(b"garbage")
    assert run.latest_good_checkpoint() == previous


def test_train_cross_entropy_refuses_to_overwrite_a_run(tmp_path, comedy):
    corpus, _ = comedy
    kwargs = dict(
        out=tmp_path,
        corpus=corpus,
        data_config=DataConfig(genres=["comedy"]),
        tokenizer_config=TokenizerConfig(vocab_size=400, max_tokens=8),
        model_config=ModelConfig(embedding_dim=16, hidden_size=32),
        train_config=CrossEntropyConfig(max_steps=3, batch_size=16),
        progress=False,
        tensorboard=False,
    )
    train_cross_entropy(**kwargs)
    assert RunDir(tmp_path).read_config()["model"]["vocab_size"] == 400
    with pytest.raises(RunError, match="already holds a run"):
        train_cross_entropy(**kwargs)
    summary = train_cross_entropy(**kwargs | {"resume": True})
    assert summary["steps"] == 3


def test_unwritable_run_directory_fails_at_start(tmp_path, comedy):
    corpus, _ = comedy
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(RunError, match="cannot write"):
        train_cross_entropy(
            out=blocker / "run",
            corpus=corpus,
            data_config=DataConfig(genres=["comedy"]),
            tokenizer_config=TokenizerConfig(),
            model_config=ModelConfig(),
            train_config=CrossEntropyConfig(),
            progress=False,
        )


def test_backward_examples_are_the_swapped_pairs(corpus_dir, comedy):
    corpus, forward = comedy
    backward = prepare_dataset(
        corpus,
        DataConfig(genres=["comedy"], direction="backward"),
        TokenizerConfig(vocab_size=600, max_tokens=12),
        tokenizer=forward.tokenizer,
    )
    for split in ("train", "valid", "test"):
        ahead, back = forward.splits[split].examples, backward.splits[split].examples
        assert len(ahead) == len(back) > 0
        for a, b in zip(ahead, back, strict=True):
            assert (b.source, b.reply, b.pair) == (a.reply, a.source, a.pair)


def small_run(out, corpus, **data):
    return train_cross_entropy(
        out=out,
        corpus=corpus,
        data_config=DataConfig(**data),
        tokenizer_config=TokenizerConfig(vocab_size=500, max_tokens=10),
        model_config=ModelConfig(embedding_dim=16, hidden_size=32),
        train_config=CrossEntropyConfig(max_steps=4, batch_size=16, eval_every=2),
        device="cpu",
        progress=False,
        tensorboard=False,
    )


def test_fine_tuning_starts_from_the_given_weights_and_keeps_the_tokenizer(
    tmp_path, comedy, monkeypatch
):
    from rlchat.checkpoint import load_bundle

    corpus, _ = comedy
    small_run(tmp_path / "all", corpus)
    start = load_bundle(RunDir(tmp_path / "all").best_path)
    seen = {}
    original_fit = CrossEntropyTrainer.fit

    def fit(self, **kwargs):  # the weights the first step starts from
        seen["weights"] = {k: v.clone() for k, v in self.model.state_dict().items()}
        return original_fit(self, **kwargs)

    monkeypatch.setattr(CrossEntropyTrainer, "fit", fit)
    train_cross_entropy(
        out=tmp_path / "comedy",
        corpus=corpus,
        data_config=DataConfig(genres=["comedy"]),
        tokenizer_config=TokenizerConfig(vocab_size=3000, max_tokens=20),  # ignored: init's
        model_config=ModelConfig(hidden_size=64),  # ignored: init's shape
        train_config=CrossEntropyConfig(max_steps=3, batch_size=16, lr=1e-3),
        init=tmp_path / "all",
        device="cpu",
        progress=False,
        tensorboard=False,
    )
    for name, tensor in start.weights.items():
        assert torch.equal(seen["weights"][name], tensor), name
    tuned = RunDir(tmp_path / "comedy")
    config = tuned.read_config()
    assert config["init"] == str(tmp_path / "all")
    assert config["data"]["genres"] == ["comedy"] and config["train"]["lr"] == 1e-3
    assert config["tokenizer"]["vocab_size"] == 500 and config["model"]["hidden_size"] == 32
    assert tuned.tokenizer_path.read_text() == RunDir(tmp_path / "all").tokenizer_path.read_text()
    tuned_weights = load_bundle(tuned.model_path()).weights
    assert any(not torch.equal(tuned_weights[k], v) for k, v in start.weights.items())


def test_fine_tuning_refuses_another_split(tmp_path, comedy):
    corpus, _ = comedy
    small_run(tmp_path / "all", corpus)
    with pytest.raises(RunError, match="split-seed"):
        train_cross_entropy(
            out=tmp_path / "other",
            corpus=corpus,
            data_config=DataConfig(genres=["comedy"], split_seed=3),
            tokenizer_config=TokenizerConfig(),
            model_config=ModelConfig(),
            train_config=CrossEntropyConfig(max_steps=1),
            init=tmp_path / "all",
            device="cpu",
            progress=False,
            tensorboard=False,
        )


def test_a_run_stopped_between_validations_validates_its_last_weights(tmp_path, comedy):
    _, dataset = comedy
    trainer = make_trainer(
        tmp_path, dataset, CrossEntropyConfig(batch_size=32, max_steps=30, eval_every=20)
    )
    trainer.fit(progress=False)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    validated = [r["step"] for r in records if "valid/loss" in r]
    assert validated == [20, 30]


def test_label_smoothing_gives_no_mass_to_the_special_tokens():
    from rlchat.train.cross_entropy import NEVER_TARGETS, smoothed_cross_entropy

    torch.manual_seed(0)
    logits, gold = torch.randn(6, 12), torch.tensor([5, 6, 7, 3, 8, 11])
    plain = smoothed_cross_entropy(logits, gold, 0.0)
    assert plain == pytest.approx(
        torch.nn.functional.cross_entropy(logits, gold, reduction="sum").item()
    )
    smoothed = smoothed_cross_entropy(logits, gold, 0.1)
    allowed = [t for t in range(12) if t not in NEVER_TARGETS]
    log_probs = torch.log_softmax(logits, dim=-1)
    target = torch.zeros(6, 12)
    target[:, allowed] = 0.1 / len(allowed)
    target[torch.arange(6), gold] += 0.9
    assert smoothed == pytest.approx(-(target * log_probs).sum().item(), rel=1e-5)
    # Raising a special token's logit changes nothing but the normaliser it shares with all.
    bumped = logits.clone()
    bumped[:, NEVER_TARGETS[0]] = -30.0
    assert smoothed_cross_entropy(bumped, gold, 0.1) < smoothed


def example(reply: list[int]):
    from rlchat.corpus import Pair
    from rlchat.dataset import Example

    return Example(source=[5], reply=reply, pair=Pair("a", "b", "m0", "c0", ("comedy",)))


def test_frequency_weights_favour_rare_tokens_and_average_one_over_the_targets():
    from rlchat.tokenizer import EOS_ID
    from rlchat.train.cross_entropy import frequency_weights

    # token 5 is said 6 times, token 6 twice, token 7 once; <eos> ends each of the 4 replies.
    examples = [example([5, 5, 6]), example([5, 5]), example([5, 6]), example([5, 7])]
    weights = frequency_weights(examples, vocab_size=10, power=0.5)
    counts = {5: 6, 6: 2, 7: 1, EOS_ID: 4}
    for token, count in counts.items():
        assert weights[token] / weights[7] == pytest.approx(count**-0.5, rel=1e-5)
    total = sum(counts.values())
    mean = sum(c * weights[t].item() for t, c in counts.items()) / total
    assert mean == pytest.approx(1.0, rel=1e-6)
    assert torch.allclose(frequency_weights(examples, 10, 0.0), torch.ones(10))


def test_weighted_cross_entropy_scales_each_position_by_its_gold_tokens_weight():
    from rlchat.train.cross_entropy import smoothed_cross_entropy

    torch.manual_seed(0)
    logits, gold = torch.randn(5, 9), torch.tensor([5, 6, 5, 8, 7])
    weights = torch.linspace(0.5, 2.0, 9)
    per_position = torch.nn.functional.cross_entropy(logits, gold, reduction="none")
    expected = (per_position * weights[gold]).sum().item()
    assert smoothed_cross_entropy(logits, gold, 0.0, weights).item() == pytest.approx(expected)
    smoothed = smoothed_cross_entropy(logits, gold, 0.1, weights)
    unweighted_rows = [
        smoothed_cross_entropy(logits[i : i + 1], gold[i : i + 1], 0.1) for i in range(5)
    ]
    assert smoothed.item() == pytest.approx(
        sum(w * r.item() for w, r in zip(weights[gold].tolist(), unweighted_rows, strict=True)),
        rel=1e-5,
    )


def test_common_replies_are_dropped_from_training_only(tmp_path, comedy, monkeypatch):
    from rlchat.tokenizer import ChatTokenizer
    from rlchat.train.cross_entropy import drop_common_replies

    examples = [example([5]), example([5]), example([5]), example([6, 7]), example([6, 7])]
    assert [e.reply for e in drop_common_replies(examples, 2)] == [[6, 7], [6, 7]]
    assert drop_common_replies(examples, 0) == examples

    corpus, _ = comedy
    seen = {}
    original_fit = CrossEntropyTrainer.fit

    def fit(self, **kwargs):
        seen["train"], seen["valid"] = self.train_examples, self.valid_examples
        return original_fit(self, **kwargs)

    monkeypatch.setattr(CrossEntropyTrainer, "fit", fit)
    data, tokens = DataConfig(genres=["comedy"]), TokenizerConfig(vocab_size=500, max_tokens=12)
    train_cross_entropy(
        out=tmp_path / "run",
        corpus=corpus,
        data_config=data,
        tokenizer_config=tokens,
        model_config=ModelConfig(embedding_dim=16, hidden_size=32),
        train_config=CrossEntropyConfig(max_steps=1, batch_size=8, max_reply_count=3),
        device="cpu",
        progress=False,
        tensorboard=False,
    )
    assert max(Counter(tuple(e.reply) for e in seen["train"]).values()) <= 3
    tokenizer = ChatTokenizer.load(RunDir(tmp_path / "run").tokenizer_path)
    full = prepare_dataset(corpus, data, tokens, tokenizer=tokenizer).splits["train"].examples
    kept = {tuple(e.reply) for e in seen["train"]}
    dropped = [e for e in full if tuple(e.reply) not in kept]
    assert dropped and all(
        Counter(tuple(e.reply) for e in full)[tuple(e.reply)] > 3 for e in dropped
    )
    assert len(seen["train"]) + len(dropped) == len(full)
    # Validation keeps its common replies: what the run is judged on does not change.
    assert max(Counter(tuple(e.reply) for e in seen["valid"]).values()) > 3


def test_frequency_weighted_training_lowers_loss_and_moves_gradient_off_common_tokens(
    tmp_path, comedy
):
    from rlchat.train.cross_entropy import frequency_weights

    _, dataset = comedy
    config = CrossEntropyConfig(batch_size=32, max_steps=150, frequency_weighting=0.5)
    trainer = make_trainer(tmp_path, dataset, config)
    expected = frequency_weights(trainer.train_examples, dataset.tokenizer.vocab_size, 0.5)
    assert torch.equal(trainer.token_weights, expected)  # the trainer weighs its own examples
    before_params = [p.detach().clone() for p in trainer.model.parameters()]
    before = evaluate_loss(trainer.model, trainer.valid_examples, trainer.device)["loss"]
    summary = trainer.fit(progress=False)
    assert summary["valid"]["valid/loss"] < before - 1.0  # validation stays unweighted
    assert any(
        not torch.equal(a, b)
        for a, b in zip(before_params, trainer.model.parameters(), strict=True)
    )


def test_recent_replies_count_a_sliding_window_and_judge_against_a_full_one():
    from rlchat.train.cross_entropy import RecentReplies

    recent = RecentReplies(4, [[1], [1], [2]])
    assert recent.top_share() == pytest.approx(2 / 3)
    # A share of a full window: 2 of 4 is not more than half, so [1] is not yet frequent.
    assert not recent.is_frequent([1], 0.5) and recent.is_frequent([1], 0.4)
    recent.add([[3], [3], [3]])  # the window slides: both [1]s fall out
    assert recent.to_json() == [[2], [3], [3], [3]]
    assert (1,) not in recent.counts and recent.is_frequent([3], 0.5)
    assert RecentReplies(4, recent.to_json()).counts == recent.counts


def test_unlikelihood_matches_a_direct_computation():
    from rlchat.train.cross_entropy import unlikelihood

    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    tokens = torch.tensor([0, 2])
    p = torch.softmax(logits, dim=-1)
    expected = -(torch.log(1 - p[0, 0]) + torch.log(1 - p[1, 2]))
    assert float(unlikelihood(logits, tokens)) == pytest.approx(float(expected), rel=1e-6)
    # A token the model never says costs nothing.
    assert float(unlikelihood(torch.tensor([[30.0, -30.0]]), torch.tensor([1]))) < 1e-6


def test_negative_training_trains_down_the_replies_it_flags(tmp_path, comedy):
    from rlchat.scoring import reference_loss

    _, dataset = comedy
    plain_config = CrossEntropyConfig(batch_size=32, warmup_steps=1, lr=1e-3)
    # Every greedy reply counts as frequent here, so each step trains its batch's down.
    config = CrossEntropyConfig(
        batch_size=32, warmup_steps=1, lr=1e-3, negative_threshold=1e-6, negative_weight=5.0
    )
    # Unlikelihood pushes on what the model is sure of: start both from a model trained
    # until its greedy replies are confident.
    start = confident_start(tmp_path, dataset)
    plain = make_trainer(tmp_path / "plain", dataset, plain_config)
    negative = make_trainer(tmp_path / "negative", dataset, config)
    from_start(start, plain, negative)
    batch = negative.train_examples[:32]
    sources = [e.source for e in batch]
    flagged = greedy_replies(negative, sources)
    # The same batch and start for both: only the penalty differs.
    figures = step_side_by_side(plain, negative, batch, 5)
    assert figures["ce/negative_share"] == 1.0 and figures["ce/unlikelihood"] > 0
    assert figures["ce/loss"] > figures["ce/nll"]
    device = torch.device("cpu")
    nll_plain = reference_loss(plain.model, sources, flagged, device)["loss"]
    nll_negative = reference_loss(negative.model, sources, flagged, device)["loss"]
    assert nll_negative > nll_plain + 0.5
    # ... while the batch's own replies stay about as likely as plain training makes them.
    replies = [e.reply for e in batch]
    gold_plain = reference_loss(plain.model, sources, replies, device)["loss"]
    assert reference_loss(negative.model, sources, replies, device)["loss"] < gold_plain + 0.5


def test_a_resumed_negative_training_run_counts_on_from_the_same_window(tmp_path, comedy):
    _, dataset = comedy
    config = CrossEntropyConfig(
        batch_size=32, max_steps=6, checkpoint_every=3, negative_threshold=0.1, negative_window=50
    )
    trainer = make_trainer(tmp_path, dataset, config)
    trainer.on_step = lambda t: setattr(t, "stop_requested", t.state.step == 3)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(progress=False)
    resumed = make_trainer(tmp_path, dataset, config)
    assert resumed.resume()
    assert (
        resumed.recent.to_json() == trainer.recent.to_json() and len(trainer.recent.replies) == 50
    )


def mismatch_gap(model, sources, replies) -> float:
    """Mean l(r_i | s_i) - l(r_i | s_{i+1}) over distinct neighbours, scored pair by pair."""
    from rlchat.scoring import sequence_log_likelihood

    following = sources[1:] + sources[:1]
    own = sequence_log_likelihood(model, sources, replies, "cpu")
    other = sequence_log_likelihood(model, following, replies, "cpu")
    keep = torch.tensor([a != b for a, b in zip(replies, replies[1:] + replies[:1], strict=True)])
    return float((own - other)[keep].mean())


def test_mismatched_input_loss_matches_a_pair_by_pair_computation(tmp_path, comedy):
    from rlchat.batching import make_batch
    from rlchat.train.cross_entropy import token_loss

    _, dataset = comedy
    config = CrossEntropyConfig(batch_size=16, contrastive_weight=1.0, contrastive_margin=50.0)
    trainer = make_trainer(tmp_path, dataset, config)
    batch = trainer.train_examples[:16]
    sources, replies = [e.source for e in batch], [e.reply for e in batch]
    trainer.model.eval()  # no dropout: both computations see the same network
    with torch.no_grad():
        loss, figures = trainer.loss(batch)
        plain = token_loss(trainer.model, make_batch(sources, replies))
    assert figures["ce/nll"] == pytest.approx(float(plain), rel=1e-5)
    gap = mismatch_gap(trainer.model, sources, replies)
    assert figures["ce/mismatch_gap"] == pytest.approx(gap, abs=1e-4)
    # A margin no pair meets: the hinge is m - gap for every row, added with weight 1.
    assert figures["ce/mismatch_loss"] == pytest.approx(50.0 - gap, abs=1e-4)
    assert float(loss) == pytest.approx(figures["ce/nll"] + figures["ce/mismatch_loss"], rel=1e-5)


def test_mismatched_input_training_makes_replies_fit_their_own_inputs(tmp_path, comedy):
    _, dataset = comedy
    start = make_trainer(
        tmp_path / "start", dataset, CrossEntropyConfig(batch_size=32, max_steps=100)
    )
    start.fit(progress=False)
    plain = make_trainer(
        tmp_path / "plain", dataset, CrossEntropyConfig(batch_size=32, warmup_steps=1, lr=1e-3)
    )
    contrastive = make_trainer(
        tmp_path / "contrastive",
        dataset,
        CrossEntropyConfig(
            batch_size=32, warmup_steps=1, lr=1e-3, contrastive_weight=5.0, contrastive_margin=2.0
        ),
    )
    from_start(start, plain, contrastive)
    batch = contrastive.train_examples[:32]
    sources, replies = [e.source for e in batch], [e.reply for e in batch]
    before = mismatch_gap(start.model, sources, replies)
    # The same batch and start for both: only the margin term differs.
    figures = step_side_by_side(plain, contrastive, batch, 10)
    assert figures["ce/loss"] > figures["ce/nll"] > 0
    gap_plain = mismatch_gap(plain.model, sources, replies)
    gap_contrastive = mismatch_gap(contrastive.model, sources, replies)
    # Measured: 0.02 at the start, 0.17 after plain training, 0.39 with the margin.
    assert gap_contrastive > gap_plain + 0.1 and gap_contrastive > before + 0.2
    assert any(
        not torch.equal(a, b)
        for a, b in zip(plain.model.parameters(), contrastive.model.parameters(), strict=True)
    )


def test_negative_training_and_the_mismatch_margin_are_not_combined(tmp_path, comedy):
    _, dataset = comedy
    config = CrossEntropyConfig(negative_threshold=0.1, contrastive_weight=1.0)
    with pytest.raises(RunError, match="contrastive-weight"):
        make_trainer(tmp_path, dataset, config)


def test_weight_averaging_validates_and_saves_the_moving_average(tmp_path, comedy):
    from rlchat.checkpoint import load_bundle

    _, dataset = comedy
    decay = 0.8
    trainer = make_trainer(
        tmp_path, dataset, CrossEntropyConfig(batch_size=32, max_steps=12, ema_decay=decay)
    )
    name = next(n for n, _ in trainer.model.named_parameters())
    seen = []
    trainer.on_step = lambda t: seen.append(dict(t.model.named_parameters())[name].detach().clone())
    trainer.fit(progress=False)
    expected = seen[0]
    for weights in seen[1:]:
        expected = decay * expected + (1 - decay) * weights
    average = dict(trainer.average.module.named_parameters())[name]
    assert torch.allclose(average, expected, atol=1e-6)
    last = dict(trainer.model.named_parameters())[name]
    assert not torch.allclose(last, average)  # training goes on from the last weights
    best = load_bundle(trainer.run.best_path).weights
    assert torch.equal(best[name], average.detach())
    # ... and validation judged the average: its loss is the one recorded.
    assert trainer.state.best_score == pytest.approx(
        evaluate_loss(trainer.average.module, trainer.valid_examples, trainer.device)["loss"]
    )


def test_a_resumed_run_keeps_its_moving_average(tmp_path, comedy):
    _, dataset = comedy
    config = CrossEntropyConfig(batch_size=32, max_steps=20, checkpoint_every=7, ema_decay=0.9)
    straight = make_trainer(tmp_path / "a", dataset, config)
    straight.fit(progress=False)
    interrupted = make_trainer(tmp_path / "b", dataset, config)
    interrupted.on_step = lambda t: setattr(t, "stop_requested", t.state.step == 9)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(progress=False)
    resumed = make_trainer(tmp_path / "b", dataset, config)
    assert resumed.resume() and resumed.state.step == 9
    resumed.fit(progress=False)
    for a, b in zip(
        straight.average.module.parameters(), resumed.average.module.parameters(), strict=True
    ):
        assert torch.equal(a, b)
    assert int(resumed.average.n_averaged) == 20


def test_word_dropout_hides_reply_tokens_from_the_decoder_input_only():
    torch.manual_seed(0)
    replies = [[7 + (i + j) % 50 for j in range(1 + i % 9)] for i in range(400)]
    batch = make_batch([[5, 6]] * 400, replies)
    assert drop_words(batch, 0.0) is batch
    dropped = drop_words(batch, 0.3)
    assert torch.equal(dropped.tgt_out, batch.tgt_out)
    assert torch.equal(dropped.tgt_mask, batch.tgt_mask) and torch.equal(dropped.src, batch.src)
    assert (dropped.tgt_in[:, 0] == BOS_ID).all()
    changed = dropped.tgt_in != batch.tgt_in
    assert (dropped.tgt_in[changed] == UNK_ID).all()
    assert not changed[~batch.tgt_mask].any()  # padding stays padding
    reply_tokens = batch.tgt_mask.clone()
    reply_tokens[:, 0] = False
    share = changed[reply_tokens].float().mean().item()
    assert 0.27 < share < 0.33
    everything = drop_words(batch, 1.0)
    assert (everything.tgt_in[reply_tokens] == UNK_ID).all()


def test_word_dropout_training_lowers_loss_and_trains_otherwise(tmp_path, comedy):
    _, dataset = comedy
    runs = {}
    for rate in (0.0, 0.3):
        trainer = make_trainer(
            tmp_path / str(rate),
            dataset,
            CrossEntropyConfig(batch_size=32, max_steps=120, word_dropout=rate),
        )
        before = evaluate_loss(trainer.model, trainer.valid_examples, trainer.device)["loss"]
        summary = trainer.fit(progress=False)
        assert summary["valid"]["valid/loss"] < before - 0.5
        runs[rate] = trainer.model
    assert any(
        not torch.equal(a, b)
        for a, b in zip(runs[0.0].parameters(), runs[0.3].parameters(), strict=True)
    )


def test_word_dropout_is_not_combined_with_whole_reply_rows(tmp_path, comedy):
    _, dataset = comedy
    for extra in ({"negative_threshold": 0.1}, {"contrastive_weight": 1.0}):
        with pytest.raises(RunError, match="word-dropout"):
            make_trainer(tmp_path, dataset, CrossEntropyConfig(word_dropout=0.2, **extra))


def test_reply_token_counts_count_each_reply_once_with_its_eos():
    from rlchat.tokenizer import EOS_ID
    from rlchat.train.cross_entropy import reply_token_counts

    counts = reply_token_counts([[5, 6, 5], [6], []], vocab_size=8)
    assert counts.tolist()[5:7] == [2.0, 2.0] and counts[EOS_ID] == 3 and counts.sum() == 7


def test_overuse_weights_price_only_the_tokens_greedy_replies_overuse():
    import math

    import numpy as np

    from rlchat.train.cross_entropy import overuse_weights

    generated = np.array([0.0, 6.0, 2.0, 2.0, 0.0])
    human = np.array([0.0, 2.0, 4.0, 3.0, 1.0])
    weights = overuse_weights(generated, human)
    # p_g = (0, .6, .2, .2, 0); p_h = (.1, .2, .4, .3, .1): token 0, never said by people,
    # counts as said once, and only token 1 is said more often by the greedy replies.
    assert weights[1] == pytest.approx(0.6 * math.log(0.6 / 0.2))
    assert weights[[0, 2, 3, 4]].tolist() == [0.0, 0.0, 0.0, 0.0]
    # Matching the people's distribution costs nothing.
    assert not overuse_weights(human, human).any()


def overuse_kl(model, sources, human, greedy) -> float:
    """KL(greedy replies' tokens || the training replies') over the inputs."""
    from rlchat.batching import encode_inputs
    from rlchat.decoding import decode
    from rlchat.train.cross_entropy import overuse_weights, reply_token_counts

    model.eval()
    with torch.no_grad():
        replies = decode(model, *encode_inputs(sources), greedy).to_lists()
    generated = reply_token_counts(replies, len(human))
    return float(overuse_weights(generated, human).sum())


def test_vocabulary_unlikelihood_trains_down_the_overused_tokens(tmp_path, comedy):
    from rlchat.train.cross_entropy import reply_token_counts

    _, dataset = comedy
    start = confident_start(tmp_path, dataset)
    common = {"batch_size": 32, "warmup_steps": 1, "lr": 1e-3, "negative_window": 32}
    plain = make_trainer(tmp_path / "plain", dataset, CrossEntropyConfig(**common))
    vocab = make_trainer(
        tmp_path / "vocab", dataset, CrossEntropyConfig(vocab_unlikelihood=100.0, **common)
    )
    from_start(start, plain, vocab)
    batch = vocab.train_examples[:32]
    # The same batch and start for both: only the penalty differs.
    figures = step_side_by_side(plain, vocab, batch, 8)
    assert figures["ce/unlikelihood"] > 0 and figures["ce/overuse_kl"] > 0
    assert figures["ce/loss"] > figures["ce/nll"]
    human = reply_token_counts((e.reply for e in vocab.train_examples), len(vocab.human_counts))
    sources = [e.source for e in vocab.valid_examples[:200]]
    kl_start = overuse_kl(start.model, sources, human, vocab.greedy)
    kl_plain = overuse_kl(plain.model, sources, human, vocab.greedy)
    kl_vocab = overuse_kl(vocab.model, sources, human, vocab.greedy)
    # Measured: 1.67 at the start, 1.32 after plain training, 1.22 with the penalty.
    assert kl_vocab < kl_plain - 0.05 and kl_vocab < kl_start - 0.2, (kl_start, kl_plain, kl_vocab)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(plain.model.parameters(), vocab.model.parameters(), strict=True)
    )


def test_a_resumed_vocabulary_unlikelihood_run_matches_an_uninterrupted_one(tmp_path, comedy):
    _, dataset = comedy
    config = CrossEntropyConfig(
        batch_size=32, max_steps=10, checkpoint_every=4, vocab_unlikelihood=5.0, negative_window=48
    )
    straight = make_trainer(tmp_path / "a", dataset, config, n_train=600)
    straight.fit(progress=False)
    interrupted = make_trainer(tmp_path / "b", dataset, config, n_train=600)
    interrupted.on_step = lambda t: setattr(t, "stop_requested", t.state.step == 6)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(progress=False)
    resumed = make_trainer(tmp_path / "b", dataset, config, n_train=600)
    assert resumed.resume() and resumed.state.step == 6
    assert resumed.recent.to_json() == interrupted.recent.to_json()
    resumed.fit(progress=False)
    for a, b in zip(
        straight.model.state_dict().values(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_vocabulary_unlikelihood_is_not_combined_with_other_row_options(tmp_path, comedy):
    _, dataset = comedy
    for extra, flag in (
        ({"contrastive_weight": 1.0}, "contrastive-weight"),
        ({"word_dropout": 0.2}, "word-dropout"),
    ):
        with pytest.raises(RunError, match=flag):
            make_trainer(tmp_path, dataset, CrossEntropyConfig(vocab_unlikelihood=1.0, **extra))
    with pytest.raises(RunError, match="needs --vocab-unlikelihood"):
        make_trainer(tmp_path, dataset, CrossEntropyConfig(vocab_unlikelihood_spare_pieces=True))


def test_prefix_counts_and_their_overuse_match_a_direct_count():
    from rlchat.tokenizer import EOS_ID
    from rlchat.train.cross_entropy import overused_prefixes, prefix_counts

    e = EOS_ID
    counts = prefix_counts([[7, 8, 9], [7, 8], [7], []], longest=2)
    assert counts == Counter({(7,): 3, (7, 8): 2, (7, e): 1, (e,): 1})
    generated = Counter({(7,): 6, (9,): 1})  # of 8 greedy replies
    human = Counter({(7,): 2, (5,): 30, (9,): 4})  # of 40 people's replies
    weights = overused_prefixes(generated, 8, human, 40)
    # (9,) is said by 1/8 of the greedy replies and 4/40 of people's: overused, slightly.
    assert weights.keys() == {(7,), (9,)}
    assert weights[(7,)] == pytest.approx(0.75 * math.log(0.75 / 0.05))
    assert weights[(9,)] == pytest.approx(0.125 * math.log(0.125 / 0.1))
    # A beginning people never use is priced as if used once.
    assert overused_prefixes(Counter({(3,): 2}), 4, Counter(), 10) == {
        (3,): pytest.approx(0.5 * math.log(0.5 / 0.1))
    }


def first_words_kl(model, sources, human, greedy, longest: int) -> float:
    """KL(greedy replies' beginnings || the training replies') over the inputs."""
    from rlchat.batching import encode_inputs
    from rlchat.decoding import decode
    from rlchat.train.cross_entropy import overused_prefixes, prefix_counts

    model.eval()
    with torch.no_grad():
        replies = decode(model, *encode_inputs(sources), greedy).to_lists()
    generated = prefix_counts(replies, longest)
    return sum(overused_prefixes(generated, len(replies), human, human.total()).values())


def test_prefix_unlikelihood_trains_down_the_overused_beginnings(tmp_path, comedy):
    from rlchat.train.cross_entropy import prefix_counts

    _, dataset = comedy
    start = confident_start(tmp_path, dataset)
    common = {"batch_size": 32, "warmup_steps": 1, "lr": 1e-3, "negative_window": 32}
    plain = make_trainer(tmp_path / "plain", dataset, CrossEntropyConfig(**common))
    prefix = make_trainer(
        tmp_path / "prefix",
        dataset,
        CrossEntropyConfig(prefix_unlikelihood=10.0, prefix_tokens=1, **common),
    )
    from_start(start, plain, prefix)
    batch = prefix.train_examples[:32]
    figures = step_side_by_side(plain, prefix, batch, 8)
    assert figures["ce/prefix_unlikelihood"] > 0 and figures["ce/prefix_share"] > 0
    assert figures["ce/loss"] > figures["ce/nll"]
    # With one prefix token only each reply's first token is priced: one beginning a reply.
    human = prefix_counts((e.reply for e in prefix.train_examples), 1)
    sources = [e.source for e in prefix.valid_examples[:200]]
    kls = [
        first_words_kl(m.model, sources, human, prefix.greedy, 1) for m in (start, plain, prefix)
    ]
    # Measured: 2.28 at the start, 1.9-2.1 after plain training, 1.63 with the penalty (at
    # weight 100 the first tokens hop to another and the KL rises).
    assert kls[2] < kls[1] - 0.2 and kls[2] < kls[0] - 0.4, kls
    assert any(
        not torch.equal(a, b)
        for a, b in zip(plain.model.parameters(), prefix.model.parameters(), strict=True)
    )


def test_vocabulary_unlikelihood_decodes_only_its_share_of_each_batch(tmp_path, comedy):
    _, dataset = comedy
    start = confident_start(tmp_path, dataset)
    common = {"batch_size": 32, "warmup_steps": 1, "lr": 1e-3, "vocab_unlikelihood": 100.0}
    whole = make_trainer(tmp_path / "whole", dataset, CrossEntropyConfig(**common))
    quarter = make_trainer(
        tmp_path / "quarter",
        dataset,
        CrossEntropyConfig(**common, negative_window=16, vocab_unlikelihood_share=0.25),
    )
    from_start(start, whole, quarter)
    batch = quarter.train_examples[:32]
    sources = [e.source for e in batch]
    expected = greedy_replies(quarter, sources[:8])
    first = quarter.train_step(batch, total_steps=2)
    # The window holds the greedy replies of the batch's first quarter, as the model said them
    # before the step; nothing is penalised until it is full.
    assert quarter.recent.to_json() == expected and first["ce/unlikelihood"] == 0
    second = quarter.train_step(batch, total_steps=2)
    assert len(quarter.recent.replies) == 16 and second["ce/unlikelihood"] > 0
    assert quarter.greedy_rows(32) == 8 and quarter.greedy_rows(3) == 1
    assert whole.greedy_rows(32) == 32
    with pytest.raises(RunError, match="needs --vocab-unlikelihood"):
        make_trainer(tmp_path / "bad", dataset, CrossEntropyConfig(vocab_unlikelihood_share=0.5))


def test_spared_pieces_are_never_priced_by_vocabulary_unlikelihood(tmp_path, comedy):
    import numpy as np

    _, dataset = comedy
    common = {"batch_size": 32, "negative_window": 32, "vocab_unlikelihood": 10.0}
    priced, spared = (
        make_trainer(tmp_path / name, dataset, CrossEntropyConfig(**common, **extra))
        for name, extra in (("all", {}), ("spare", {"vocab_unlikelihood_spare_pieces": True}))
    )
    pieces = np.asarray(dataset.tokenizer.continues_word())
    # A window of replies that say every token once: each overuses the (rarer) pieces too.
    every_token = [list(range(5, dataset.tokenizer.vocab_size))] * 32
    for trainer in (priced, spared):
        trainer.recent.add(every_token)
    assert priced.overuse_weights()[pieces].sum() > 0
    weights = spared.overuse_weights()
    assert not weights[pieces].any() and weights[~pieces].sum() > 0
    assert np.array_equal(weights[~pieces], priced.overuse_weights()[~pieces])


def test_negative_training_rides_on_the_vocabulary_unlikelihood_rows(tmp_path, comedy):
    from rlchat.scoring import reference_loss

    _, dataset = comedy
    start = confident_start(tmp_path, dataset)
    common = {"batch_size": 32, "warmup_steps": 1, "lr": 1e-3, "vocab_unlikelihood": 10.0}
    vocab = make_trainer(tmp_path / "vocab", dataset, CrossEntropyConfig(**common))
    # Every greedy reply counts as frequent here, so each step trains its batch's down.
    both = make_trainer(
        tmp_path / "both",
        dataset,
        CrossEntropyConfig(**common, negative_threshold=1e-6, negative_weight=5.0),
    )
    from_start(start, vocab, both)
    batch = both.train_examples[:32]
    sources = [e.source for e in batch]
    flagged = greedy_replies(both, sources)
    # The same batch and start for both: only the negative term differs.
    figures = step_side_by_side(vocab, both, batch, 5)
    assert figures["ce/negative_share"] == 1.0 and figures["ce/negative_unlikelihood"] > 0
    device = torch.device("cpu")
    nll_vocab = reference_loss(vocab.model, sources, flagged, device)["loss"]
    assert reference_loss(both.model, sources, flagged, device)["loss"] > nll_vocab + 0.5


def test_top1_selection_scores_validation_by_loss_plus_the_commonest_greedy_reply(tmp_path, comedy):
    from rlchat.checkpoint import load_bundle

    _, dataset = comedy
    weight = 2.0
    config = CrossEntropyConfig(
        batch_size=32, max_steps=60, eval_every=20, select_top1_weight=weight
    )
    trainer = make_trainer(tmp_path, dataset, config)
    trainer.fit(progress=False)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    validations = [r for r in records if "valid/loss" in r]
    assert [r["step"] for r in validations] == [20, 40, 60]
    for r in validations:
        assert 0 < r["valid/top1"] <= 1
        assert r["valid/selection_score"] == pytest.approx(
            r["valid/loss"] + weight * r["valid/top1"]
        )
    # The last validation judged the last weights: its top1 is their greedy replies' own.
    replies = greedy_replies(trainer, [e.source for e in trainer.valid_examples])
    commonest = Counter(map(tuple, replies)).most_common(1)[0][1]
    assert validations[-1]["valid/top1"] == pytest.approx(commonest / len(replies))
    best = min(validations, key=lambda r: r["valid/selection_score"])
    assert load_bundle(trainer.run.best_path).config["train_state"]["step"] == best["step"]
    assert trainer.state.best_score == pytest.approx(best["valid/selection_score"])


def test_best_follows_the_selection_score_while_the_schedule_follows_the_loss(tmp_path, comedy):
    from rlchat.checkpoint import load_bundle

    _, dataset = comedy
    config = CrossEntropyConfig(
        batch_size=32, schedule="plateau", patience=2, select_top1_weight=1.0
    )
    trainer = make_trainer(tmp_path, dataset, config)
    # (loss, selection score) of four validations, and what each must leave behind:
    # the step best/ holds, the rate's scale, whether training stops.
    script = [
        ((3.0, 3.5), 1, 1.0, False),  # both improve
        ((2.9, 3.6), 1, 1.0, False),  # the loss improves, the selection does not
        ((2.95, 3.4), 3, 0.5, False),  # the selection improves, the loss does not
        ((2.95, 3.45), 3, 0.25, True),  # neither: the second stall in a row stops training
    ]
    for step, ((loss, score), best_step, lr_scale, stopped) in enumerate(script, start=1):
        trainer.evaluate = lambda loss=loss, score=score: (
            score,
            {"valid/loss": loss, "valid/selection_score": score},
        )
        trainer.state.step = step
        trainer.validate()
        assert load_bundle(trainer.run.best_path).config["train_state"]["step"] == best_step
        assert trainer.state.lr_scale == lr_scale
        assert trainer.state.stopped_early is stopped


def test_a_checkpoint_from_before_the_split_scores_resumes_with_one_score_for_both(
    tmp_path, comedy
):
    import hashlib

    _, dataset = comedy
    config = CrossEntropyConfig(batch_size=32, max_steps=4, eval_every=2, checkpoint_every=4)
    make_trainer(tmp_path, dataset, config).fit(progress=False)
    checkpoint = max((tmp_path / "checkpoints").iterdir())
    state_path = checkpoint / "state.json"
    state = json.loads(state_path.read_text())
    del state["train"]["best_progress"]  # as written before it existed
    state_path.write_text(json.dumps(state))
    checksums = json.loads((checkpoint / "checksums.json").read_text())
    checksums["state.json"] = hashlib.sha256(state_path.read_bytes()).hexdigest()
    (checkpoint / "checksums.json").write_text(json.dumps(checksums))
    resumed = make_trainer(tmp_path, dataset, replace(config, max_steps=6))
    assert resumed.resume()
    assert resumed.state.step == 4
    assert resumed.state.best_progress == resumed.state.best_score < float("inf")
