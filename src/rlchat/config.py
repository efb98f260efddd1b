"""Typed configurations. Every default lives here once; the CLI maps onto these fields."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, TypeVar

T = TypeVar("T")


@dataclass
class DataConfig:
    """Which pairs of the corpus a run uses and how they are split."""

    genres: list[str] = field(default_factory=list, metadata={"help": "genres to keep; empty = all"})
    split_seed: int = field(default=0, metadata={"help": "seed of the conversation-level split"})
    # 90/5/5 by conversation: enough held-out pairs for bootstrap intervals on one genre.
    valid_fraction: float = field(default=0.05, metadata={"help": "share of conversations in validation"})
    test_fraction: float = field(default=0.05, metadata={"help": "share of conversations in test"})
    lenient: bool = field(default=False, metadata={"help": "skip and count malformed corpus lines"})
    context_turns: int = field(default=0, metadata={"help": "previous utterances joined to the input"})


@dataclass
class TokenizerConfig:
    """How text becomes ids."""

    kind: Literal["bpe", "word"] = field(default="bpe", metadata={"help": "bpe (subword) or word"})
    vocab_size: int = field(default=8000, metadata={"help": "bpe: target vocabulary size"})
    # The original project pruned words seen fewer than 10 times; published BLEU figures use it.
    min_count: int = field(default=10, metadata={"help": "word: drop words seen fewer times"})
    max_tokens: int = field(default=20, metadata={"help": "drop pairs with a longer side"})
    drop_unknown: bool = field(
        default=False, metadata={"help": "word: drop pairs with a pruned word, as the original did"}
    )


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass."""
    return asdict(config)


def from_dict(cls: type[T], values: dict[str, Any]) -> T:
    """Rebuild a config, ignoring keys it does not know (older or newer bundles)."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in values.items() if k in known})
