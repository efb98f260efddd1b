"""From corpus pairs to token-id examples: split, tokenizer, filters, and their statistics."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlchat.config import DataConfig, TokenizerConfig
from rlchat.corpus import SPLITS, Corpus, Pair, Split, split_pairs
from rlchat.tokenizer import SEP_ID, UNK_ID, ChatTokenizer, train_tokenizer

logger = logging.getLogger(__name__)


@dataclass
class Example:
    """One training example: input ids (context + source) and reply ids, no specials."""

    source: list[int]
    reply: list[int]
    pair: Pair


@dataclass
class SplitData:
    examples: list[Example]
    # Pairs left after each filter, in order; the first entry is all pairs of the split.
    filters: dict[str, int] = field(default_factory=dict)


@dataclass
class PreparedDataset:
    tokenizer: ChatTokenizer
    splits: dict[Split, SplitData]

    def pairs(self) -> dict[Split, list[Pair]]:
        """The pairs each split keeps after filtering: what evaluation reads."""
        return {name: [e.pair for e in data.examples] for name, data in self.splits.items()}

    def stats(self) -> dict[str, Any]:
        """Filter counts, vocabulary size and length percentiles, ready for JSON."""
        return {
            "vocab_size": self.tokenizer.vocab_size,
            "splits": {
                split: {
                    "filters": data.filters,
                    "lengths": {
                        "source": length_percentiles([len(e.source) for e in data.examples]),
                        "reply": length_percentiles([len(e.reply) for e in data.examples]),
                    },
                }
                for split, data in self.splits.items()
            },
        }


def seeded_sample(n: int, size: int, seed: int) -> np.ndarray:
    """`size` of range(n) drawn without replacement, in increasing order (all when size is 0).

    Subsets of a split are drawn, not cut from its front: pairs come ordered by movie, so the
    first thousand are a handful of films.
    """
    if not size or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def length_percentiles(lengths: list[int]) -> dict[str, int]:
    if not lengths:
        return {"p50": 0, "p90": 0, "p99": 0, "max": 0}
    values = np.percentile(np.asarray(lengths), [50, 90, 99])
    return {
        "p50": int(values[0]),
        "p90": int(values[1]),
        "p99": int(values[2]),
        "max": int(max(lengths)),
    }


def with_context(
    source: list[int], history: list[list[int]], context_turns: int, max_tokens: int
) -> list[int]:
    """Previous turns (each cut to its last ``max_tokens``) joined to the source by <sep>."""
    ids: list[int] = []
    for turn in history[len(history) - context_turns :] if context_turns else []:
        ids.extend(turn[-max_tokens:])
        ids.append(SEP_ID)
    return ids + source


def encode_split(
    pairs: list[Pair],
    tokenizer: ChatTokenizer,
    data_config: DataConfig,
    tok_config: TokenizerConfig,
) -> SplitData:
    """Encode pairs and apply the filters, counting what each one removes."""
    filters = {"all": len(pairs)}
    pairs = [p for p in pairs if p.source.strip() and p.reply.strip()]
    filters["no_empty_side"] = len(pairs)
    sources = tokenizer.encode_batch([p.source for p in pairs])
    replies = tokenizer.encode_batch([p.reply for p in pairs])
    # An utterance that normalises to nothing (e.g. only an html tag) is empty too.
    keep = [
        i
        for i in range(len(pairs))
        if 0 < len(sources[i]) <= tok_config.max_tokens
        and 0 < len(replies[i]) <= tok_config.max_tokens
    ]
    filters["max_tokens"] = len(keep)
    if tok_config.kind == "word" and tok_config.drop_unknown:
        keep = [i for i in keep if UNK_ID not in sources[i] and UNK_ID not in replies[i]]
        filters["no_unknown_word"] = len(keep)
    examples = []
    for i in keep:
        pair = pairs[i]
        if data_config.direction == "backward":
            # p(input | reply): the reply is read, the input written; no context is joined.
            examples.append(Example(source=replies[i], reply=sources[i], pair=pair))
            continue
        source = sources[i]
        if data_config.context_turns and pair.history:
            history = tokenizer.encode_batch(list(pair.history[-data_config.context_turns :]))
            source = with_context(source, history, data_config.context_turns, tok_config.max_tokens)
        examples.append(Example(source=source, reply=replies[i], pair=pair))
    return SplitData(examples=examples, filters=filters)


def prepare_dataset(
    corpus: Corpus,
    data_config: DataConfig,
    tok_config: TokenizerConfig,
    tokenizer: ChatTokenizer | None = None,
) -> PreparedDataset:
    """Split the genre's pairs by conversation or movie, train the tokenizer on train, encode
    all splits.

    Pass ``tokenizer`` to reuse a trained one (resume, evaluation, RL from a CE run).
    """
    pairs = corpus.pairs(data_config.genres)
    by_split = split_pairs(
        pairs,
        seed=data_config.split_seed,
        valid_fraction=data_config.valid_fraction,
        test_fraction=data_config.test_fraction,
        split_by=data_config.split_by,
    )
    if tokenizer is None:
        # Train only on the training split so held-out text never shapes the vocabulary.
        texts = [text for p in by_split["train"] for text in (p.source, p.reply)]
        tokenizer = train_tokenizer(texts, tok_config)
    splits = {
        split: encode_split(by_split[split], tokenizer, data_config, tok_config) for split in SPLITS
    }
    logger.debug("examples per split: %s", {s: len(d.examples) for s, d in splits.items()})
    return PreparedDataset(tokenizer=tokenizer, splits=splits)
