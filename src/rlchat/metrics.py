"""Evaluation metrics on decoded replies, and paired bootstrap intervals to compare systems.

Replies and references are decoded strings (lower-cased, normalised); word-level metrics split
them on whitespace. Paired bootstrap after Koehn, "Statistical Significance Tests for Machine
Translation Evaluation", EMNLP 2004, https://aclanthology.org/W04-3250.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import sacrebleu

# canonical_reply and most_frequent live with the rewards (the stock reward uses them too).
from rlchat.train.rewards import DULL_REPLIES, bleu2, canonical_reply, most_frequent  # noqa: F401

# --------------------------------------------------------------------------- overlap


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """SacreBLEU corpus BLEU-4 in [0, 100], default settings (13a tokens, exp smoothing).

    ``references[i]`` lists one or more references for ``hypotheses[i]``. SacreBLEU takes one
    stream per reference position; shorter lists are padded with ``None``, which it skips. An
    empty string would count as a reference of length 0 and change the brevity penalty.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    if not hypotheses:
        raise ValueError("corpus_bleu needs at least one hypothesis")
    if any(len(refs) == 0 for refs in references):
        raise ValueError("every hypothesis needs at least one reference")
    depth = max(len(refs) for refs in references)
    streams = [
        [refs[k] if k < len(refs) else None for refs in references] for k in range(depth)
    ]  # (depth, len(hypotheses))
    return sacrebleu.corpus_bleu(list(hypotheses), streams).score


def mean_bleu2(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Mean sentence BLEU-2 over whitespace words, in [0, 1].

    NLTK's ``sentence_bleu`` with weights (0.5, 0.5) and smoothing method 1, averaged: the
    measure chatbot tutorials on this corpus report, so their figures can be compared.
    """
    if not hypotheses:
        return 0.0
    scores = bleu2(
        [h.split() for h in hypotheses], [[r.split() for r in refs] for refs in references]
    )
    return math.fsum(scores) / len(scores)


# --------------------------------------------------------------------------- diversity


def _ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return list(zip(*(words[i:] for i in range(n)), strict=False))


def distinct_n(replies: Iterable[str], n: int) -> float:
    """Distinct-n (Li et al. 2016, https://arxiv.org/abs/1510.03055): distinct n-grams over
    all n-grams of all replies; 0 when the replies hold no n-gram."""
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    grams = [gram for reply in replies for gram in _ngrams(reply.split(), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def mean_length(replies: Sequence[str]) -> float:
    """Mean number of whitespace words per reply; 0 for no replies."""
    return sum(len(r.split()) for r in replies) / len(replies) if replies else 0.0


def dull_rate(replies: Sequence[str], dull_replies: Iterable[str] = DULL_REPLIES) -> float:
    """Share of replies equal, in canonical form, to one of `dull_replies`.

    Pass ``[*DULL_REPLIES, *most_frequent(training_replies)]`` to also count the corpus's
    stock answers.
    """
    if not replies:
        return 0.0
    dull = {canonical_reply(d) for d in dull_replies}
    return sum(canonical_reply(r) in dull for r in replies) / len(replies)


def is_repetitive(reply: str, n: int = 2) -> bool:
    """True when a whitespace n-gram occurs twice, or a word follows itself.

    "i know i know" repeats a bigram; "gonna gonna" repeats a word at once.
    """
    words = reply.split()
    grams = _ngrams(words, n)
    stutter = any(a == b for a, b in zip(words, words[1:], strict=False))
    return stutter or len(set(grams)) < len(grams)


def repetition_rate(replies: Sequence[str], n: int = 2) -> float:
    """Share of replies that `is_repetitive` flags; 0 for no replies."""
    return sum(is_repetitive(r, n) for r in replies) / len(replies) if replies else 0.0


def perplexity(total_nll: float, tokens: int) -> float:
    """exp(mean negative log-likelihood per token), in nats; inf when it overflows."""
    if tokens <= 0:
        raise ValueError(f"perplexity needs at least one token, got {tokens}")
    mean = total_nll / tokens
    return math.exp(mean) if mean < math.log(np.finfo(np.float64).max) else math.inf


# --------------------------------------------------------------------------- bootstrap


def _resamples(n: int, resamples: int, seed: int) -> np.ndarray:
    """Indices of `resamples` bootstrap samples of n examples -> (resamples, n)."""
    if n < 1:
        raise ValueError("bootstrap needs at least one example")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, not {resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _interval(
    observed: float, differences: np.ndarray, confidence: float
) -> tuple[float, float, float]:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), not {confidence}")
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(differences, [tail, 100.0 - tail])
    return float(observed), float(low), float(high)


def paired_bootstrap(
    values_a: Sequence[float],
    values_b: Sequence[float],
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Mean of b - a over paired per-example values, and its percentile bootstrap interval.

    Returns (mean difference, low, high). Both systems are scored on the same resampled
    examples, so the interval reflects their difference, not each one's spread.
    """
    a = np.asarray(values_a, dtype=np.float64)
    b = np.asarray(values_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two equally long lists, got shapes {a.shape} and {b.shape}")
    differences = b - a  # (n,)
    indices = _resamples(len(differences), resamples, seed)  # (resamples, n)
    return _interval(differences.mean(), differences[indices].mean(axis=1), confidence)


def paired_bootstrap_metric(
    metric_a: Callable[[np.ndarray], float],
    metric_b: Callable[[np.ndarray], float],
    n: int,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    recentre: bool = False,
) -> tuple[float, float, float]:
    """`paired_bootstrap` for corpus-level metrics such as corpus BLEU.

    ``metric_x(indices)`` scores system x on the examples at `indices` (repeats included);
    returns (metric_b - metric_a on all n examples, low, high). The same seed draws the same
    samples as `paired_bootstrap`. ``recentre`` shifts the resampled differences so that their
    mean is the observed one, keeping their spread: for distinct-n, whose resamples repeat
    replies and so lose distinct n-grams (the more varied system loses more), the plain
    percentile interval can miss the observed difference altogether.
    """
    indices = _resamples(n, resamples, seed)  # (resamples, n)
    everything = np.arange(n)
    observed = metric_b(everything) - metric_a(everything)
    differences = np.array([metric_b(sample) - metric_a(sample) for sample in indices])
    if recentre:
        differences = differences + (observed - differences.mean())
    return _interval(observed, differences, confidence)
