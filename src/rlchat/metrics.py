"""Evaluation metrics on decoded replies.

Replies and references are decoded strings (lower-cased, normalised); word-level metrics split
them on whitespace. Corpus-level figures (sacreBLEU, distinct-n, the reply distribution) are
also given as per-example statistics whose column sums determine the figure, so that a
resampled corpus is scored by adding rows, never by re-running a scorer (see `significance`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Collection, Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import sacrebleu
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer

from rlchat.text import DULL_REPLIES, canonical_reply, ngram_counts, ngrams, words_of

# --------------------------------------------------------------------------- overlap

Token = Hashable  # a token id or a word: BLEU only compares tokens

# Chen & Cherry 2014, smoothing method 1 as NLTK implements it: epsilon over zero-match orders.
BLEU_EPSILON = 0.1
BLEU_WEIGHTS = (0.5, 0.5)


@dataclass(frozen=True)
class ReferenceCounts:
    """What BLEU-2 needs of one input's references: per order, each n-gram's largest count in
    any one reference (the clip), and the reference lengths. RL scores thousands of samples
    against the same references; counting them once per input saves recounting each step."""

    clips: tuple[Counter, ...]
    lengths: tuple[int, ...]


def reference_counts(references: Sequence[Sequence[Token]]) -> ReferenceCounts:
    if not references:
        raise ValueError("bleu2 needs at least one reference per hypothesis")
    refs = [tuple(r) for r in references]
    clips = []
    for n in range(1, len(BLEU_WEIGHTS) + 1):
        clip: Counter = Counter()
        for ref in refs:
            for gram, count in ngram_counts(ref, n).items():
                clip[gram] = max(clip[gram], count)
        clips.append(clip)
    return ReferenceCounts(tuple(clips), tuple(len(r) for r in refs))


def _sentence_bleu2(
    hypothesis: Sequence[Token], references: Sequence[Sequence[Token]] | ReferenceCounts
) -> float:
    if not isinstance(references, ReferenceCounts):
        references = reference_counts(references)
    hyp = tuple(hypothesis)
    precisions = []
    for n, clip in enumerate(references.clips, start=1):
        counts = ngram_counts(hyp, n)
        # Modified precision: each n-gram is credited at most as often as one reference has it.
        matches = sum(min(count, clip[gram]) for gram, count in counts.items() if gram in clip)
        if n == 1 and matches == 0:
            return 0.0  # NLTK returns 0 before smoothing when no unigram matches
        total = max(1, len(hyp) - n + 1)  # NLTK's floor of 1 keeps 1-token replies defined
        precisions.append(matches / total if matches else BLEU_EPSILON / total)
    # The reference length nearest the hypothesis', the shorter on a tie (as NLTK, mteval).
    closest = min(references.lengths, key=lambda r: (abs(r - len(hyp)), r))
    brevity = 1.0 if len(hyp) > closest else math.exp(1 - closest / len(hyp))
    log_mean = math.fsum(w * math.log(p) for w, p in zip(BLEU_WEIGHTS, precisions, strict=True))
    return brevity * math.exp(log_mean)


def bleu2(
    hypotheses: Sequence[Sequence[Token]],
    references: Sequence[Sequence[Sequence[Token]] | ReferenceCounts],
) -> list[float]:
    """Sentence BLEU-2 of each hypothesis against its references, in [0, 1].

    Papineni et al. 2002 with weights (0.5, 0.5), smoothing method 1 (Chen & Cherry 2014) and
    the brevity penalty of the closest reference length: equal to NLTK's
    ``sentence_bleu(refs, hyp, weights=(0.5, 0.5), smoothing_function=method1)``, including
    0 for an empty hypothesis or one without a matching token. ``references[i]`` holds one or
    more references for ``hypotheses[i]``, or their `reference_counts`.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    return [_sentence_bleu2(h, refs) for h, refs in zip(hypotheses, references, strict=True)]


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


def distinct_n(replies: Iterable[str], n: int) -> float:
    """Distinct-n (Li et al. 2016, https://arxiv.org/abs/1510.03055): distinct n-grams over
    all n-grams of all replies; 0 when the replies hold no n-gram."""
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    grams = [gram for reply in replies for gram in ngrams(reply.split(), n)]
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
    grams = ngrams(words, n)
    stutter = any(a == b for a, b in zip(words, words[1:], strict=False))
    return stutter or len(set(grams)) < len(grams)


def has_unknown_word(reply: str, known_words: Collection[str]) -> bool:
    """True when the reply holds a word that no line of `known_words` holds.

    A subword model can spell words no one says ("finisheding", "hundredman"): fluent-looking
    garble that BLEU and the diversity figures count as variety.
    """
    return any(word not in known_words for word in words_of(reply))


def repetition_rate(replies: Sequence[str], n: int = 2) -> float:
    """Share of replies that `is_repetitive` flags; 0 for no replies."""
    return sum(is_repetitive(r, n) for r in replies) / len(replies) if replies else 0.0


def perplexity(total_nll: float, tokens: int) -> float:
    """exp(mean negative log-likelihood per token), in nats; inf when it overflows."""
    if tokens <= 0:
        raise ValueError(f"perplexity needs at least one token, got {tokens}")
    return float(perplexities(np.asarray([total_nll]), np.asarray([tokens]))[0])


def perplexities(total_nll: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """`perplexity` of many (summed NLL, token count) at once -> array; inf on overflow."""
    mean = np.asarray(total_nll, dtype=np.float64) / np.maximum(np.asarray(tokens), 1)
    with np.errstate(over="ignore"):
        return np.exp(mean)


# --------------------------------------------------------------------------- figures of sums
# Each corpus figure is a function of the column sums of per-example statistics (R, k) -> (R,),
# so that one resampled corpus costs one matrix product (see `rlchat.significance`).


def mean_statistics(values: Sequence[float]) -> np.ndarray:
    """Per-example statistics whose figure (`mean_value`) is the mean of `values` -> (n, 2)."""
    values = np.asarray(values, dtype=np.float64)
    return np.column_stack([values, np.ones_like(values)])


def mean_value(totals: np.ndarray) -> np.ndarray:
    """Figure of statistics ``[value, 1]``: the mean value."""
    return totals[:, 0] / np.maximum(totals[:, 1], 1e-300)


def distinct_value(totals: np.ndarray) -> np.ndarray:
    """Figure of count vectors: distinct items over all items (distinct-n, unique replies)."""
    totals = np.asarray(totals)
    return (totals > 0.5).sum(axis=1) / np.maximum(totals.sum(axis=1), 1e-300)


def commonest_share(replies: Sequence[Sequence[int]]) -> float:
    """The commonest reply's share of token-id replies: training's validation top1 (the
    evaluation's, `top1_value`, counts canonical texts)."""
    counts = Counter(tuple(reply) for reply in replies)
    return max(counts.values(), default=0) / max(1, len(replies))


def top1_value(totals: np.ndarray) -> np.ndarray:
    """Figure of reply count vectors: the commonest reply's share."""
    totals = np.asarray(totals)
    return totals.max(axis=1) / np.maximum(totals.sum(axis=1), 1e-300)


def entropy_bits(counts: np.ndarray) -> np.ndarray:
    """Entropy in bits of each row of non-negative counts (R, K) -> (R,): of whole replies,
    log2 N for N distinct replies said equally often, 0 for one reply to everything."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1)
    # H = log2 N - sum(c log2 c) / N; c log2 c vanishes for counts 0 and 1, so one log of
    # max(c, 1) serves every cell.
    c_log_c = (counts * np.log2(np.maximum(counts, 1.0))).sum(axis=1)
    safe = np.where(totals > 0, totals, 1.0)
    return np.where(totals > 0, np.log2(safe) - c_log_c / safe, 0.0)


# --------------------------------------------------------------------------- statistics


def bleu_statistics(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> np.ndarray:
    """SacreBLEU's sufficient statistics per hypothesis -> (n, 2 + 2 * 4) float64.

    Columns: hypothesis length, reference length, then matches and totals of each n-gram
    order. Their column sums give `corpus_bleu` exactly (`bleu_from_statistics`).
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    if not hypotheses:
        return np.zeros((0, 10))
    depth = max(len(refs) for refs in references)
    streams = [[refs[k] if k < len(refs) else None for refs in references] for k in range(depth)]
    scorer = sacrebleu.BLEU()
    # The per-segment statistics sacreBLEU sums for its corpus score (and for its own paired
    # tests); the public API only returns the sum.
    stats = scorer._extract_corpus_statistics(list(hypotheses), streams)
    return np.asarray(stats, dtype=np.float64)


def bleu_from_statistics(totals: np.ndarray) -> np.ndarray:
    """Corpus BLEU (sacreBLEU's default smoothing) of each row of summed statistics (R, 10)."""
    totals = np.atleast_2d(totals)
    order = (totals.shape[1] - 2) // 2  # lengths, then matches and totals per n-gram order
    scores = []
    for row in totals:
        hyp_len, ref_len = int(row[0]), int(row[1])
        correct = [int(c) for c in row[2 : 2 + order]]
        total = [int(t) for t in row[2 + order : 2 + 2 * order]]
        scores.append(
            sacrebleu.BLEU.compute_bleu(correct, total, hyp_len, ref_len, smooth_method="exp").score
        )
    return np.asarray(scores)


def ngram_count_statistics(systems: Sequence[Sequence[str]], n: int) -> list[sparse.csr_array]:
    """Each system's per-reply counts of word n-grams, on one shared vocabulary -> (n, G) each.

    Their column sums give `distinct_n` (distinct columns over the total) for any subset.
    """
    return _shared_counts(systems, lambda reply: [" ".join(g) for g in ngrams(reply.split(), n)])


def reply_count_statistics(systems: Sequence[Sequence[str]]) -> list[sparse.csr_array]:
    """Each system's replies as one-hot rows over the canonical replies of all -> (n, K) each.

    Column sums are the reply counts behind `top1_value`, `distinct_value` (unique replies)
    and `entropy_bits`; replies are compared in canonical form ("I'm not." == "i'm not").
    """
    return _shared_counts(systems, lambda reply: [canonical_reply(reply)])


def _shared_counts(
    systems: Sequence[Sequence[str]], analyzer: Callable[[str], list[str]]
) -> list[sparse.csr_array]:
    vectorizer = CountVectorizer(analyzer=analyzer)
    try:
        vectorizer.fit([reply for replies in systems for reply in replies])
    except ValueError:  # not one item in any reply (e.g. only one-word replies for bigrams)
        return [sparse.csr_array((len(replies), 1)) for replies in systems]
    return [
        sparse.csr_array(vectorizer.transform(list(replies)), dtype=np.float64)
        for replies in systems
    ]
