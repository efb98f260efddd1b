"""Bots without a model, to tell whether a trained bot's figures mean anything.

``random`` answers every input with a training reply drawn at random; ``retrieval`` with the
reply of the most similar training input (word TF-IDF, cosine). On Cornell a random training
reply scores BLEU-2 0.102 against a Transformer's 0.120 (Csáky et al. 2019,
https://aclanthology.org/P19-1567, Table 5): a figure that does not beat these says little.

Both answer like a `Chatbot` (``reply_batch``) and are functions of the input: the same input
always gets the same reply, as from a deterministic bot, so evaluation treats them alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.neighbors import NearestNeighbors

from rlchat.corpus import Pair
from rlchat.tokenizer import normalize_text

BASELINE_NAMES = ("random", "retrieval")
# Words (one letter too: "i") and contractions; punctuation carries little of what a line is about.
WORD_PATTERN = r"(?u)\b\w[\w']*\b"


class Baseline:
    """Answers each message on its own: the history and decoding settings play no part."""

    name: str
    stage = "baseline"

    def reply_batch(
        self,
        messages: Sequence[str],
        histories: Sequence[Sequence[str]] | None = None,
        config: Any = None,
        generator: Any = None,
    ) -> list[str]:
        """Replies by the baseline's own rule; decoding settings and generator do not apply."""
        return self.answer(list(messages)) if messages else []

    def answer(self, messages: list[str]) -> list[str]:
        raise NotImplementedError


class RandomReplyBot(Baseline):
    """A training reply chosen by a hash of the input and the seed."""

    def __init__(self, train_pairs: Sequence[Pair], seed: int = 0, name: str = "random") -> None:
        if not train_pairs:
            raise ValueError("the random baseline needs training pairs")
        self.name = name
        self.seed = seed
        self.replies = [normalize_text(p.reply) for p in train_pairs]

    def _index(self, message: str) -> int:
        key = f"{self.seed}:{normalize_text(message)}".encode()
        digest = hashlib.blake2b(key, digest_size=8).digest()
        return int.from_bytes(digest, "big") % len(self.replies)

    def answer(self, messages: list[str]) -> list[str]:
        return [self.replies[self._index(m)] for m in messages]


class RetrievalBot(Baseline):
    """The reply of the training input nearest the message in word TF-IDF cosine."""

    def __init__(self, train_pairs: Sequence[Pair], name: str = "retrieval") -> None:
        if not train_pairs:
            raise ValueError("the retrieval baseline needs training pairs")
        self.name = name
        self.replies = [normalize_text(p.reply) for p in train_pairs]
        self.vectorizer = TfidfVectorizer(token_pattern=WORD_PATTERN, sublinear_tf=True)
        inputs = self.vectorizer.fit_transform([normalize_text(p.source) for p in train_pairs])
        self.index = NearestNeighbors(n_neighbors=1, metric="cosine", algorithm="brute")
        self.index.fit(inputs)

    def answer(self, messages: list[str]) -> list[str]:
        queries = self.vectorizer.transform([normalize_text(m) for m in messages])
        nearest = self.index.kneighbors(queries, return_distance=False)[:, 0]
        return [self.replies[i] for i in np.asarray(nearest)]


def make_baseline(name: str, train_pairs: Sequence[Pair], seed: int = 0) -> Baseline:
    """A baseline bot by name (`BASELINE_NAMES`)."""
    if name == "random":
        return RandomReplyBot(train_pairs, seed=seed)
    if name == "retrieval":
        return RetrievalBot(train_pairs)
    raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINE_NAMES)}")


def parse_baselines(spec: str) -> list[str]:
    """``"random,retrieval"`` -> the names; ``""`` or ``"none"`` -> none."""
    names = [part.strip() for part in spec.split(",") if part.strip()]
    if names == ["none"]:
        return []
    for name in names:
        if name not in BASELINE_NAMES:
            raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINE_NAMES)}")
    return list(dict.fromkeys(names))
