"""Distilling the MMI-reranked bot into cross-entropy, on tiny real runs of the excerpt."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from helpers.tiny_run import train_tiny_pair, train_tiny_run
from rlchat.chatbot import Chatbot
from rlchat.checkpoint import load_bundle, load_weights
from rlchat.config import (
    CrossEntropyConfig,
    DataConfig,
    ModelConfig,
    TokenizerConfig,
    from_dict,
    served_decoding,
)
from rlchat.corpus import load_corpus
from rlchat.dataset import prepare_dataset
from rlchat.model import Seq2Seq
from rlchat.runs import RunDir, RunError
from rlchat.train.cross_entropy import CrossEntropyTrainer, evaluate_loss, train_cross_entropy
from rlchat.train.distillation import TEACHER_BATCH, TEACHER_FILE

SHARE = 0.05  # of comedy's training pairs: enough rows to check, quick to decode


@pytest.fixture(scope="module")
def runs(tmp_path_factory, corpus_dir):
    corpus = load_corpus(corpus_dir)
    root = tmp_path_factory.mktemp("distil")
    forward, backward = train_tiny_pair(root, corpus)
    return corpus, forward, backward


def distil(out, corpus, forward, backward, genre="comedy", init=None, **train):
    options = {
        "max_steps": 20,
        "batch_size": 16,
        "lr": 3e-3,
        "eval_every": 10,
        "distil_share": SHARE,
    }
    return train_cross_entropy(
        out=out,
        corpus=corpus,
        data_config=DataConfig(genres=[genre]),
        tokenizer_config=TokenizerConfig(),  # the init's
        model_config=ModelConfig(),  # the init's
        train_config=CrossEntropyConfig(
            distil_teacher=str(forward),
            distil_backward=str(backward),
            **(options | train),
        ),
        init=init or forward,
        device="cpu",
        progress=False,
        tensorboard=False,
    )


def genre_train(corpus, forward, genre="comedy"):
    bot = Chatbot.load(forward, device="cpu")
    data = replace(bot.data_config, genres=[genre])
    dataset = prepare_dataset(corpus, data, bot.tokenizer_config, tokenizer=bot.tokenizer)
    return dataset.splits["train"].examples


def test_the_teachers_mmi_replies_replace_the_chosen_share_of_replies(tmp_path, runs, monkeypatch):
    corpus, forward, backward = runs
    trained = {}
    original_fit = CrossEntropyTrainer.fit

    def fit(self, **kwargs):  # what the trainer was given, and the weights it starts from
        trained["examples"] = list(self.train_examples)
        trained["start"] = {k: v.clone() for k, v in self.model.state_dict().items()}
        return original_fit(self, **kwargs)

    monkeypatch.setattr(CrossEntropyTrainer, "fit", fit)
    distil(tmp_path / "student", corpus, forward, backward)

    saved = json.loads((tmp_path / "student" / TEACHER_FILE).read_text(encoding="utf-8"))
    human = genre_train(corpus, forward)
    rows = saved["rows"]
    assert len(rows) == round(SHARE * len(human)) and len(set(rows)) == len(rows)
    # The saved replies are the teacher's MMI choices for those inputs, decoded as seeded
    # (the first batch again: the samples of a batch share one generator).
    teacher = Chatbot.load(forward, device="cpu", backward=backward)
    chosen = [human[row] for row in rows[:TEACHER_BATCH]]
    again = teacher.mmi_reply_ids(
        [e.pair.source for e in chosen],
        [e.source for e in chosen],
        served_decoding(),
        torch.Generator().manual_seed(CrossEntropyConfig.seed),
    )
    assert again == saved["replies"][:TEACHER_BATCH]
    # The trainer saw them in place of the human replies there, and people's replies elsewhere.
    examples = trained["examples"]
    replaced = dict(zip(rows, saved["replies"], strict=True))
    assert len(examples) == len(human)
    for row, (seen, person) in enumerate(zip(examples, human, strict=True)):
        assert seen.source == person.source
        expected = replaced.get(row) or person.reply
        assert seen.reply == expected, row
    assert sum(examples[r].reply != human[r].reply for r in rows) > len(rows) / 2
    # It starts from the init's weights and trains them.
    start = load_bundle(RunDir(forward).best_path).weights
    assert all(torch.equal(trained["start"][k], v) for k, v in start.items())
    tuned = load_bundle(RunDir(tmp_path / "student").model_path()).weights
    assert any(not torch.equal(tuned[k], v) for k, v in start.items())


def test_training_on_the_teachers_replies_fits_them_better_than_training_on_peoples(tmp_path, runs):
    corpus, forward, backward = runs
    # A small genre, every reply the teacher's; the same run without the teacher beside it.
    steps = {"max_steps": 60, "distil_share": 1.0}
    distil(tmp_path / "student", corpus, forward, backward, genre="musical", **steps)
    distil(tmp_path / "control", corpus, "", "", genre="musical", init=forward, **steps)
    saved = json.loads((tmp_path / "student" / TEACHER_FILE).read_text(encoding="utf-8"))
    human = genre_train(corpus, forward, genre="musical")
    rows = zip(saved["rows"], saved["replies"], strict=True)
    taught = [replace(human[row], reply=reply) for row, reply in rows if reply]
    assert len(taught) > len(human) / 2

    def loss(run):
        model = Seq2Seq(from_dict(ModelConfig, load_bundle(run).config["model"]))
        load_weights(model, load_bundle(run).weights)
        return evaluate_loss(model, taught, torch.device("cpu"))["loss"]

    student = loss(RunDir(tmp_path / "student").step_checkpoints()[0])
    control = loss(RunDir(tmp_path / "control").step_checkpoints()[0])
    assert student < control < loss(RunDir(forward).best_path) + 0.5


def test_a_resumed_distillation_reads_its_saved_replies(tmp_path, runs, monkeypatch):
    corpus, forward, backward = runs
    distil(tmp_path / "student", corpus, forward, backward, max_steps=4)
    path = tmp_path / "student" / TEACHER_FILE
    saved = path.read_text(encoding="utf-8")

    def no_teacher(*args, **kwargs):
        raise AssertionError("a resumed run decodes no teacher replies")

    monkeypatch.setattr("rlchat.train.distillation.load_teacher", no_teacher)
    train_cross_entropy(
        out=tmp_path / "student",
        corpus=corpus,
        data_config=DataConfig(),
        tokenizer_config=TokenizerConfig(),
        model_config=ModelConfig(),
        train_config=CrossEntropyConfig(),
        resume=True,
        device="cpu",
        progress=False,
        tensorboard=False,
    )
    assert path.read_text(encoding="utf-8") == saved


def test_a_teacher_must_come_with_its_backward_model_and_the_students_tokenizer(
    tmp_path, runs, corpus_dir
):
    corpus, forward, backward = runs
    with pytest.raises(RunError, match="go together"):
        distil(tmp_path / "a", corpus, forward, "")
    with pytest.raises(RunError, match="--distil-backward: .* is not a run"):
        distil(tmp_path / "b", corpus, forward, tmp_path / "nowhere")
    with pytest.raises(RunError, match="forward run"):
        distil(tmp_path / "c", corpus, backward, backward)
    other = train_tiny_run(tmp_path / "other", corpus, vocab_size=300)  # its own vocabulary
    with pytest.raises(RunError, match="another tokenizer"):
        distil(tmp_path / "d", corpus, other, backward, init=forward)
