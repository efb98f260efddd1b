"""A barely trained run on one genre of the real excerpt: enough to load, decode and evaluate."""

from __future__ import annotations

from pathlib import Path

from rlchat.config import CrossEntropyConfig, DataConfig, ModelConfig, TokenizerConfig
from rlchat.corpus import Corpus
from rlchat.train.cross_entropy import train_cross_entropy


def train_tiny_run(
    out: Path,
    corpus: Corpus,
    genre: str = "comedy",
    direction: str = "forward",
    init: Path | None = None,
    vocab_size: int = 400,
) -> Path:
    train_cross_entropy(
        out=out,
        corpus=corpus,
        data_config=DataConfig(genres=[genre], direction=direction),
        init=init,
        tokenizer_config=TokenizerConfig(vocab_size=vocab_size, max_tokens=8),
        model_config=ModelConfig(embedding_dim=16, hidden_size=32),
        train_config=CrossEntropyConfig(max_steps=3, batch_size=16),
        device="cpu",
        progress=False,
        tensorboard=False,
    )
    return out


def train_tiny_pair(root: Path, corpus: Corpus) -> tuple[Path, Path]:
    """A tiny comedy run and its backward model, fine-tuned from it: what MMI needs."""
    forward = train_tiny_run(root / "forward", corpus)
    return forward, train_tiny_run(root / "backward", corpus, direction="backward", init=forward)
