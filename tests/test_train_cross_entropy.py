from __future__ import annotations

import json

import pytest
import torch

from rlchat.config import CrossEntropyConfig, DataConfig, ModelConfig, TokenizerConfig
from rlchat.corpus import load_corpus
from rlchat.dataset import prepare_dataset
from rlchat.model import Seq2Seq
from rlchat.runs import RunDir, RunError
from rlchat.train.cross_entropy import CrossEntropyTrainer, evaluate_loss, train_cross_entropy


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


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, comedy):
    _, dataset = comedy
    config = CrossEntropyConfig(batch_size=32, epochs=2, checkpoint_every=15, eval_every=20)
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
