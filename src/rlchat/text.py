"""Text helpers that metrics and rewards share: the form replies are compared in, n-grams,
and the lists of replies that fit any input."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence

from rlchat.tokenizer import normalize_text

# Li et al. 2016 (https://arxiv.org/abs/1606.01541), sec. 3.2: the list S of dull responses
# behind "ease of answering".
DULL_REPLIES = (
    "i don't know what you're talking about",
    "i don't know",
    "you don't know",
    "you know what i mean",
    "i know what you mean",
    "you know what i'm saying",
    "you don't know anything",
)


# A word as a dictionary would list it: letters, with inner apostrophes ("don't", "o'clock").
_WORD_RE = re.compile(r"[a-z]+(?:'[a-z]+)*")


def words_of(text: str) -> list[str]:
    """The words of a line, in normalised form, without punctuation or numbers."""
    return _WORD_RE.findall(normalize_text(text))


def vocabulary(texts: Iterable[str]) -> frozenset[str]:
    """Every word `words_of` finds in the texts."""
    return frozenset(word for text in texts for word in words_of(text))


def ngrams(tokens: Sequence[Hashable], n: int) -> list[tuple[Hashable, ...]]:
    """The n-grams of a token sequence, in order (none when it is shorter than n)."""
    return list(zip(*(tokens[i:] for i in range(n)), strict=False))


def ngram_counts(tokens: Sequence[Hashable], n: int) -> Counter[tuple[Hashable, ...]]:
    """How often each n-gram of a token sequence occurs."""
    return Counter(ngrams(tokens, n))


def canonical_reply(text: str) -> str:
    """The form replies are compared in: normalised, single-spaced, no trailing punctuation.

    "I don't know." and "i don't know" are the same dull reply.
    """
    return normalize_text(text).rstrip(string.punctuation + " ")


def most_frequent(texts: Iterable[str], k: int = 20) -> list[str]:
    """The k commonest replies in canonical form, commonest first (ties: first seen first)."""
    counts = Counter(canonical_reply(t) for t in texts)
    counts.pop("", None)  # a reply of punctuation alone is not a reply anyone would list
    return [text for text, _ in counts.most_common(k)]


def stock_replies(training_replies: Iterable[str], k: int = 20) -> set[str]:
    """Li et al.'s dull list and the k commonest training replies, in canonical form: the
    replies that fit any input, which the ``stock`` reward prices."""
    return {canonical_reply(d) for d in DULL_REPLIES} | set(most_frequent(training_replies, k))


def held_out_dull_replies(
    validation_replies: Iterable[tuple[str, str]], priced: Iterable[str], k: int = 20
) -> set[str]:
    """The k validation replies said in the most movies that no reward prices, canonical.

    ``validation_replies`` holds (reply, movie id). Evaluation's dull-reply rate and self-play
    stop count these, so a bot cannot lower them by learning the list: `priced` (the
    ``stock`` set, which holds Li et al.'s list) is left out before the k are taken, and the
    validation split is never trained on. Ranking by the number of movies, not of lines,
    keeps a film's running line ("dartmouth.") out: a dull reply fits any film.
    """
    priced = {canonical_reply(p) for p in priced} | {""}
    movies: dict[str, set[str]] = {}
    lines: Counter[str] = Counter()
    for reply, movie in validation_replies:
        text = canonical_reply(reply)
        if text not in priced:
            movies.setdefault(text, set()).add(movie)
            lines[text] += 1
    # Said in two movies at least; more movies first, then more lines, then first seen.
    ranked = sorted(
        (text for text in movies if len(movies[text]) >= 2),
        key=lambda text: (-len(movies[text]), -lines[text]),
    )
    return set(ranked[:k])
