"""Rewards for self-critical training: one score per sampled reply, higher is better.

Text rewards are pure functions ``(hypotheses, references) -> list[float]`` on token lists (ids
or words). Model-based rewards score replies under a frozen `Seq2Seq`, after Li et al., "Deep
Reinforcement Learning for Dialogue Generation", 2016, https://arxiv.org/abs/1606.01541.
`RewardFunction` sums weighted components and reports each one's mean for logging.

Shapes: B pairs scored, C candidates, D dull replies, N real target tokens, V vocabulary size.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Collection, Hashable, Mapping, Sequence

import torch
from torch import Tensor

from rlchat.batching import encode_inputs
from rlchat.metrics import ReferenceCounts, bleu2, reference_counts
from rlchat.model import Seq2Seq
from rlchat.scoring import frozen, mean_target_log_prob, sequence_log_likelihood
from rlchat.text import DULL_REPLIES, canonical_reply, ngram_counts
from rlchat.tokenizer import EOS_ID, ChatTokenizer

Token = Hashable  # a token id or a word: BLEU and the repeat penalty only compare tokens

REFERENCE_CACHE_SIZE = 200_000  # distinct inputs whose reference counts are kept
REWARD_NAMES = ("bleu", "dull", "repeat", "coherence", "mutual", "generic", "shared", "stock")


def _repetition(tokens: tuple[Token, ...], orders: Sequence[int], max_token_count: int) -> float:
    shares = [0.0]
    for n in orders:
        if n == 1:
            excess = sum(max(0, c - max_token_count) for c in Counter(tokens).values())
            shares.append(excess / len(tokens))
        elif len(tokens) >= n:
            counts = ngram_counts(tokens, n)
            total = len(tokens) - n + 1
            shares.append((total - len(counts)) / total)
    return max(shares)


def _echo(tokens: tuple[Token, ...], source: tuple[Token, ...], echo_n: int) -> float:
    k = min(echo_n, len(tokens))  # a reply shorter than echo_n is an echo if it is all copied
    copied = ngram_counts(source, k)
    covered = [False] * len(tokens)
    for start in range(len(tokens) - k + 1):
        if tokens[start : start + k] in copied:
            covered[start : start + k] = [True] * k
    return sum(covered) / len(tokens)


def word_bleu2(
    replies: Sequence[Sequence[int]],
    references: Sequence[Sequence[Sequence[int]]],
    tokenizer: ChatTokenizer | None,
) -> list[float]:
    """BLEU-2 of reply ids on whitespace words, as evaluation measures it (subword ids would
    reward matching word pieces); on the ids themselves when no tokenizer is given."""
    return bleu2(as_words(replies, tokenizer), [as_words(refs, tokenizer) for refs in references])


def as_words(
    replies: Sequence[Sequence[int]], tokenizer: ChatTokenizer | None
) -> Sequence[Sequence[Token]]:
    """Reply ids as whitespace words, as evaluation reads them; the ids without a tokenizer."""
    if tokenizer is None:
        return replies
    return [text.split() for text in tokenizer.decode_batch(list(replies))]


def repeat_penalty(
    hypotheses: Sequence[Sequence[Token]],
    sources: Sequence[Sequence[Token]],
    *,
    orders: Sequence[int] = (1, 2, 3),
    max_token_count: int = 2,
    echo_n: int = 3,
) -> list[float]:
    """A penalty in [-1, 0] for replies that loop or parrot the input; 0 for a clean reply.

    For a reply y of T tokens and its input x::

        repetition_n = (#n-grams of y - #distinct n-grams of y) / #n-grams of y   (n >= 2)
        repetition_1 = sum_w max(0, count_y(w) - max_token_count) / T
        repetition   = max over n in `orders` of repetition_n
        echo         = share of y's tokens inside a k-gram that also occurs in x,
                       k = min(echo_n, T)
        penalty      = -min(1, repetition + echo)

    "gonna gonna gonna" scores repetition 1/2 (one of its two bigrams repeats); a copy of the
    input scores echo 1. Single tokens get the `max_token_count` allowance because "the" or
    "," recur in fine replies. An empty reply scores 0: the other rewards deal with it.
    """
    if len(hypotheses) != len(sources):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(sources)} sources")
    penalties = []
    for hypothesis, source in zip(hypotheses, sources, strict=True):
        tokens = tuple(hypothesis)
        if not tokens:
            penalties.append(0.0)
            continue
        repetition = _repetition(tokens, orders, max_token_count)
        echo = _echo(tokens, tuple(source), echo_n)
        # The sum, clipped, rather than the max: lowering either part still raises the reward.
        penalties.append(-min(1.0, repetition + echo))
    return penalties


_START, _END = ("<s>",), ("</s>",)  # sentence bounds: the pair ("<s>", "what?") is a bigram


def generic_penalty(
    hypotheses: Sequence[Sequence[Token]],
    sources: Sequence[Sequence[Token]],
    *,
    total: bool = False,
) -> list[float]:
    """A penalty in [-1, 0] (summed: [-bigrams, 0]): how much of a reply other inputs also got.

    For reply y of input i, over the bigrams g of ``<s> y </s>``::

        shared(g) = share of the other inputs j != i with g in one of their replies
        penalty   = -mean_g shared(g)

    A reply that fits every input says nothing about this one. A fixed list of dull replies
    (the ``dull`` reward) cannot see a new catch-all reply, and a policy trained on BLEU finds
    one within a few hundred steps ("i don't want you to talk." to most inputs) or a template
    ("you are the ...?"); this term sees any words shared across inputs. It is the batch's
    distinct-2 (Li et al. 2016, arXiv:1510.03055) made a per-reply reward. Rows with equal
    sources are one input (its K samples, its greedy reply, a source said twice), so an
    input's own replies never penalise each other. 0 when the batch holds one input.

    With ``total`` the shares are summed, not averaged (the ``shared`` reward): each bigram
    costs what it costs the batch's distinct-2, so padding a reply with common bigrams (which
    BLEU's brevity penalty pays for) is no longer free.
    """
    if len(hypotheses) != len(sources):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(sources)} sources")
    bigrams = [ngram_counts(_START + tuple(h) + _END, 2) for h in hypotheses]
    bigrams_of_input: dict[tuple[Token, ...], set[tuple[Token, ...]]] = defaultdict(set)
    for grams, source in zip(bigrams, sources, strict=True):
        bigrams_of_input[tuple(source)].update(grams)
    others = len(bigrams_of_input) - 1
    if others <= 0:
        return [0.0] * len(hypotheses)
    inputs_with = Counter(g for grams in bigrams_of_input.values() for g in grams)
    # A reply's own input holds each of its bigrams once: minus one leaves the other inputs.
    return [
        -math.fsum((inputs_with[g] - 1) * n for g, n in grams.items())
        / (others * (1 if total else sum(grams.values())))
        for grams in bigrams
    ]


# --------------------------------------------------------------------------- model rewards


DULL_CAP = 5.0


def dull_penalty(
    model: Seq2Seq,
    candidates: Sequence[Sequence[int]],
    dull_replies: Sequence[Sequence[int]],
    device: torch.device | str,
) -> list[float]:
    """Ease of answering, Li et al. 2016 eq. 1: r = -1/|S| sum_s 1/N_s log p(s | candidate).

    Each candidate is the model's INPUT and each dull reply s in S the target, so the reward is
    high when a dull answer is unlikely to follow the candidate. Each candidate is encoded
    once and its state shared by the |S| dull replies.
    """
    if not dull_replies:
        raise ValueError("dull_penalty needs at least one dull reply")
    device = torch.device(device)
    # Samples repeat (several draws of "i don't know."): score each distinct candidate once.
    distinct = list(dict.fromkeys(tuple(c) for c in candidates))
    position = {candidate: i for i, candidate in enumerate(distinct)}
    C, D = len(distinct), len(dull_replies)
    if not C:
        return []
    with frozen(model):
        src, src_lengths = encode_inputs(distinct)
        state = model.start(src.to(device), src_lengths)
        state = state.index_select(torch.arange(C, device=device).repeat_interleave(D))
        targets = [dull for _ in range(C) for dull in dull_replies]  # candidate-major
        log_likelihood = mean_target_log_prob(model, state, targets, device).view(C, D)
    # Capped: beyond DULL_CAP nats a dull answer is already unlikely, and more would only
    # reward gibberish that no reply can follow (the policy finds it within a few hundred steps).
    penalty = (-log_likelihood.mean(dim=1)).clamp(max=DULL_CAP).tolist()
    return [penalty[position[tuple(c)]] for c in candidates]


def coherence(
    model: Seq2Seq,
    sources: Sequence[Sequence[int]],
    replies: Sequence[Sequence[int]],
    device: torch.device | str,
) -> list[float]:
    """Mean per-token log p(reply | source) under a frozen model: a reply that fits its input.

    The forward half of Li et al.'s semantic coherence (sec. 3.2); at most 0.
    """
    return sequence_log_likelihood(model, sources, replies, device).tolist()


def mutual_information(
    model: Seq2Seq,
    backward: Seq2Seq,
    sources: Sequence[Sequence[int]],
    replies: Sequence[Sequence[int]],
    device: torch.device | str,
) -> list[float]:
    """Li et al.'s semantic coherence (sec. 3.2): (1/|r|) log p(r|s) + (1/|s|) log p_b(s|r).

    The forward term alone (``coherence``) is what cross-entropy already maximises, and it
    is high for a reply that fits any input; the backward model's term is high only when the
    input can be read back from the reply. Both per-token means, <eos> included; at most 0.
    """
    forward_fit = sequence_log_likelihood(model, sources, replies, device)
    readable = [list(r) if len(r) else [EOS_ID] for r in replies]  # nothing to read: <eos>
    points_back = sequence_log_likelihood(backward, readable, sources, device)
    return (forward_fit + points_back.to(forward_fit.device)).tolist()


def stock_penalty(replies: Sequence[str], stock: Collection[str]) -> list[float]:
    """-1 for a stock reply ("i don't know.", "what?"), else 0.

    BLEU against many references pays a stock reply well wherever the input is ambiguous,
    so RL learns to fall back on one; this prices the fallback.
    """
    return [-1.0 if canonical_reply(reply) in stock else 0.0 for reply in replies]


# --------------------------------------------------------------------------- combination


def parse_reward_spec(spec: str) -> dict[str, float]:
    """``"bleu=1.0,dull=0.5"`` -> ``{"bleu": 1.0, "dull": 0.5}``; names from `REWARD_NAMES`."""
    known = ", ".join(REWARD_NAMES)
    weights: dict[str, float] = {}
    for part in spec.split(","):
        name, equals, value = (s.strip() for s in part.partition("="))
        if not equals or not name or not value:
            raise ValueError(
                f"reward spec part {part.strip()!r} is not NAME=WEIGHT (known: {known})"
            )
        if name not in REWARD_NAMES:
            raise ValueError(f"unknown reward {name!r} in {part.strip()!r}; known: {known}")
        if name in weights:
            raise ValueError(f"reward {name!r} given twice in {spec!r}")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"weight {value!r} of reward {name!r} is not a number") from None
        if not math.isfinite(weight):
            raise ValueError(f"weight of reward {name!r} must be finite, not {value!r}")
        weights[name] = weight
    return weights


class RewardFunction:
    """Weighted sum of reward components for sampled replies, with per-component means.

    ``dull`` and ``coherence`` need the frozen `model`; ``dull`` also needs the dull replies as
    ids, e.g. ``tokenizer.encode_batch(DULL_REPLIES)``. The components have different scales
    (BLEU in [0, 1], dull a few nats); self-critical training only uses the difference between
    a sample's reward and the greedy reply's, so offsets cancel and the weights set the trade.
    """

    def __init__(
        self,
        weights: Mapping[str, float],
        *,
        model: Seq2Seq | None = None,
        dull_replies: Sequence[Sequence[int]] = (),
        device: torch.device | str = "cpu",
        tokenizer: ChatTokenizer | None = None,
        stock: Collection[str] = (),
        backward: Seq2Seq | None = None,
    ) -> None:
        unknown = sorted(set(weights) - set(REWARD_NAMES))
        if unknown:
            raise ValueError(f"unknown rewards {unknown}; known: {', '.join(REWARD_NAMES)}")
        if not weights:
            raise ValueError("no reward components given")
        needs_model = sorted({"dull", "coherence"} & set(weights))
        if needs_model and model is None:
            raise ValueError(f"rewards {needs_model} need a frozen model")
        if "mutual" in weights and (model is None or backward is None):
            raise ValueError(
                "the mutual reward needs the frozen forward model and a backward model "
                "(--backward RUN, trained with `rlchat train ce --direction backward`)"
            )
        if "dull" in weights and not dull_replies:
            raise ValueError("the dull reward needs the dull replies as token ids")
        if "stock" in weights and (not stock or tokenizer is None):
            raise ValueError("the stock reward needs the stock replies and a tokenizer")
        self.weights = dict(weights)
        self.model = model
        self.backward = backward
        self.dull_replies = [list(d) for d in dull_replies]
        self.device = torch.device(device)
        self.tokenizer = tokenizer
        self.stock = frozenset(stock)
        self._reference_cache: dict[tuple[tuple[int, ...], ...], ReferenceCounts] = {}

    @classmethod
    def from_spec(
        cls,
        spec: str,
        *,
        judge: Seq2Seq,
        tokenizer: ChatTokenizer,
        device: torch.device | str = "cpu",
        stock: Collection[str] = (),
        backward: Seq2Seq | None = None,
    ) -> RewardFunction:
        """The reward a spec like "bleu=1,dull=0.5" names, judged by a frozen CE model (and
        for ``mutual`` a frozen backward model on the same vocabulary); ``stock`` (see
        `stock_replies`) is what the ``stock`` reward prices."""
        return cls(
            parse_reward_spec(spec),
            model=judge,
            backward=backward,
            dull_replies=tokenizer.encode_batch(list(DULL_REPLIES)),
            device=device,
            tokenizer=tokenizer,
            stock=stock,
        )

    def reference_counts(self, references: Sequence[Sequence[int]]) -> ReferenceCounts:
        """BLEU's counts of one input's references (in words), counted once per input: RL
        scores every sample of every step against the same training references."""
        key = tuple(tuple(r) for r in references)
        counts = self._reference_cache.get(key)
        if counts is None:
            counts = reference_counts(as_words(references, self.tokenizer))
            if len(self._reference_cache) < REFERENCE_CACHE_SIZE:
                self._reference_cache[key] = counts
        return counts

    def components(
        self,
        replies: Sequence[Sequence[int]],
        sources: Sequence[Sequence[int]],
        references: Sequence[Sequence[Sequence[int]]],
    ) -> dict[str, list[float]]:
        """Each weighted component, unweighted, one value per reply."""
        scores: dict[str, list[float]] = {}
        if {"bleu", "generic", "shared", "stock"} & set(self.weights):
            # Decoded once for all text rewards; the ids themselves without a tokenizer.
            texts = self.tokenizer.decode_batch(list(replies)) if self.tokenizer else None
            words = replies if texts is None else [text.split() for text in texts]
        for name in self.weights:
            if name == "bleu":
                scores[name] = bleu2(words, [self.reference_counts(refs) for refs in references])
            elif name == "repeat":
                scores[name] = repeat_penalty(replies, sources)
            elif name == "generic":
                scores[name] = generic_penalty(words, sources)
            elif name == "shared":
                scores[name] = generic_penalty(words, sources, total=True)
            elif name == "stock":
                scores[name] = stock_penalty(texts, self.stock)
            elif name == "dull":
                scores[name] = dull_penalty(self.model, replies, self.dull_replies, self.device)
            elif name == "mutual":
                scores[name] = mutual_information(
                    self.model, self.backward, sources, replies, self.device
                )
            else:
                scores[name] = coherence(self.model, sources, replies, self.device)
        return scores

    def __call__(
        self,
        replies: Sequence[Sequence[int]],
        sources: Sequence[Sequence[int]],
        references: Sequence[Sequence[Sequence[int]]],
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Total reward (B,) float32 on `device`, and each component (B,) unweighted.

        replies[i] is a sampled reply to sources[i]; references[i] its reference replies.
        """
        if not len(replies) == len(sources) == len(references):
            raise ValueError(
                f"{len(replies)} replies, {len(sources)} sources, {len(references)} references"
            )
        scores = {
            name: torch.tensor(values, device=self.device)
            for name, values in self.components(replies, sources, references).items()
        }
        total = torch.zeros(len(replies), device=self.device)
        for name, values in scores.items():
            total += self.weights[name] * values
        return total, scores
