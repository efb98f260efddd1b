"""Text <-> ids: corpus normalisation and a trained Hugging Face `tokenizers` tokenizer.

Two kinds, chosen by `TokenizerConfig.kind`:

* ``bpe`` (default): byte-level BPE (Sennrich et al., 2016, https://arxiv.org/abs/1508.07909;
  byte-level as in GPT-2). Every byte is in the vocabulary, so no input is ever unknown and
  ``decode(encode(t)) == normalize_text(t)`` exactly.
* ``word``: one id per word or punctuation mark, words seen fewer than ``min_count`` times
  mapped to ``<unk>``; the configuration of the original project, kept for comparison.

Normalisation runs in Python before the library sees the text, so both kinds share it and
the saved tokenizer needs no custom normaliser. It removes ``<`` and ``>``, so no user text
can spell a special token such as ``<eos>``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from rlchat.config import TokenizerConfig

logger = logging.getLogger(__name__)

TokenizerKind = Literal["bpe", "word"]
KINDS: tuple[TokenizerKind, ...] = ("bpe", "word")

PAD, UNK, BOS, EOS, SEP = "<pad>", "<unk>", "<bos>", "<eos>", "<sep>"
# Order is the id: trainers place special tokens first, so these ids hold in every vocabulary.
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, BOS, EOS, SEP)
PAD_ID, UNK_ID, BOS_ID, EOS_ID, SEP_ID = range(len(SPECIAL_TOKENS))

# Byte-level BPE writes a leading space as this character ("Ġ"): the mark of a word's start.
BPE_SPACE = "\u0120"

JSON_FORMAT = 1  # bump when the layout of `to_json` changes

# --------------------------------------------------------------------------- normalisation

ELLIPSIS = "..."
DASH = "--"
CONTRACTION_SUFFIXES = ("t", "s", "m", "re", "ve", "ll", "d")

# ASCII for the typographic characters of the corpus. Cp1252 punctuation read as ISO-8859-1
# arrives as C1 control characters (\x92 for a right quote, \x97 for an em dash); those are
# first repaired to what cp1252 meant, then mapped here.
_ASCII_PUNCTUATION = {
    "\u2018": "'",  # left single quote
    "\u2019": "'",  # right single quote
    "\u201a": "'",
    "\u2032": "'",
    "`": "'",
    "\u00b4": "'",  # acute accent used as an apostrophe
    "\u201c": '"',
    "\u201d": '"',
    "\u201e": '"',
    "\u00ab": '"',
    "\u00bb": '"',
    "\u2013": DASH,  # en dash
    "\u2014": DASH,  # em dash
    "\u2026": ELLIPSIS,
    "\u00a0": " ",  # no-break space
    "|": " ",  # the scripts' line-break marks
    "<": " ",  # what is left of <word> emphasis once real tags are gone
    ">": " ",
    "\u00ad": "",  # soft hyphen
    "*": "",  # *word* emphasis
    "_": "",  # _word_ emphasis
}


def _character_table() -> dict[int, str]:
    """A `str.translate` table: one pass fixes every single-character oddity."""
    table = {ord(char): replacement for char, replacement in _ASCII_PUNCTUATION.items()}
    for code in range(0x80, 0xA0):
        try:
            meant = bytes([code]).decode("cp1252")
        except UnicodeDecodeError:
            meant = ""  # bytes cp1252 leaves undefined are noise
        table[code] = _ASCII_PUNCTUATION.get(meant, meant)
    return table


_CHARACTERS = _character_table()
# Most lines hold none of those characters; finding that out is cheaper than translating.
_ODD_CHARACTER_RE = re.compile("[" + re.escape("".join(map(chr, _CHARACTERS))) + "]")
# Formatting tags of the scraped scripts; other <word> brackets mark emphasis and keep the word.
_TAG_RE = re.compile(r"</?(?:a|b|i|u|s|em|strong|pre|html|body|font|br|p|span|div)\b[^<>]*>")
# Two or more dots, spaced or not ("..", ". . .", "....  ..."): one ellipsis.
_ELLIPSIS_RE = re.compile(r"\.(?:\s*\.)+")
# Dash runs and a hyphen standing alone between spaces are the script's pause or interruption.
_DASH = r"(?:-{2,}|(?<!\S)-(?!\S))"
_DASH_RE = re.compile(_DASH + r"(?:\s*" + _DASH + ")*")
# "can ' t", "don 't", "i' m": only a known suffix is rejoined, so "goin' to" and "of 'em" stay.
_CONTRACTION_RE = re.compile(r"(?<=[^\W_])(?: ' ?|' )(" + "|".join(CONTRACTION_SUFFIXES) + r")\b")


def normalize_text(text: str) -> str:
    """Lower-cased, ASCII-punctuated, single-spaced text, as both tokenizer kinds expect it.

    Dash runs (``--``, ``---``, an em dash, a spaced ``-``) become one `DASH` token with a space
    on each side: the corpus uses them for interruptions, which a reply should be able to copy.
    """
    text = text.lower()
    if "<" in text:
        text = _TAG_RE.sub("", text)
    if _ODD_CHARACTER_RE.search(text):
        text = text.translate(_CHARACTERS)
    if "." in text:
        text = _ELLIPSIS_RE.sub(ELLIPSIS, text)
    if "-" in text:
        text = _DASH_RE.sub(f" {DASH} ", text)
    text = " ".join(text.split())
    if " '" in text or "' " in text:
        text = _CONTRACTION_RE.sub(r"'\1", text)
    return text


# --------------------------------------------------------------------------- word-level text

# Word-level pieces: an ellipsis and a dash stay whole, any other punctuation mark stands alone.
_WORD_PIECES = r"\.\.\.|--|[^\w\s]"
_ATTACH_LEFT = frozenset({".", ",", "?", "!", ";", ":", ELLIPSIS, ")", "]", "%"})
_ATTACH_RIGHT = frozenset({"(", "[", "$", "#"})
_HYPHEN = "-"  # "same-sex": a spaced hyphen would come back as a dash
# Written without a space between them, two of these would come back as one dash.
_DASHES = frozenset({_HYPHEN, DASH})
# Words whose elided start the apostrophe belongs to: "tell 'em", not "tell' em".
_ELIDED_STARTS = frozenset({"em", "cause", "bout", "til", "round", "n", "tis", "twas"})


def _with_apostrophes(tokens: Sequence[str]) -> list[str]:
    """Glue each apostrophe to its word: "can ' t" -> "can't", "goin '" -> "goin'", "' em" -> "'em".

    Only the word pieces know which side an apostrophe belongs to; spacing comes after.
    """
    pieces: list[str] = []
    glue_next = False
    for index, token in enumerate(tokens):
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        if glue_next:
            pieces[-1] += token
            glue_next = False
        elif token != "'":
            pieces.append(token)
        elif pieces and pieces[-1][-1].isalnum() and following not in _ELIDED_STARTS:
            pieces[-1] += token
            glue_next = following in CONTRACTION_SUFFIXES
        else:  # an elided start or an opening quote
            pieces.append(token)
            glue_next = following is not None
    return pieces


def _needs_space(previous: str, piece: str, quote_open: bool) -> bool:
    """Whether readable text puts a space between `previous` and `piece`."""
    if previous in _DASHES and piece in _DASHES:
        return True
    if _HYPHEN in (previous, piece):
        return False
    # `quote_open` is the state before an opening or closing quote and after the one before.
    if piece == '"':
        return not quote_open and previous not in _ATTACH_RIGHT
    if previous == '"':
        return not quote_open and piece not in _ATTACH_LEFT
    return piece not in _ATTACH_LEFT and previous not in _ATTACH_RIGHT


def join_words(tokens: Sequence[str]) -> str:
    """Word-level tokens -> readable text: ["i", "can", "'", "t", "go", "."] -> "i can't go."."""
    pieces = _with_apostrophes(tokens)
    text: list[str] = []
    quote_open = False
    for index, piece in enumerate(pieces):
        if index and _needs_space(pieces[index - 1], piece, quote_open):
            text.append(" ")
        text.append(piece)
        if piece == '"':
            quote_open = not quote_open
    return "".join(text)


# --------------------------------------------------------------------------- tokenizer


def _until_eos(ids: Sequence[int]) -> list[int]:
    """The ids before the first `<eos>`: what a decoder generated past it is not the reply."""
    ids = [int(i) for i in ids]  # also accepts tensors and numpy arrays
    return ids[: ids.index(EOS_ID)] if EOS_ID in ids else ids


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; expected one of {KINDS}")


class ChatTokenizer:
    """A trained `tokenizers.Tokenizer` with the corpus normalisation in front of it."""

    # Fixed in every vocabulary, so also readable from an instance.
    pad_id, unk_id, bos_id, eos_id, sep_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID, SEP_ID

    def __init__(self, tokenizer: Tokenizer, kind: TokenizerKind) -> None:
        _check_kind(kind)
        self._tokenizer = tokenizer
        self.kind: TokenizerKind = kind

    @property
    def vocab_size(self) -> int:
        """Rows the embedding needs: every id `encode` can return is below it."""
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)

    def continues_word(self) -> list[bool]:
        """Per id: does the token continue the word before it ("'t", "ing") rather than start
        one? BPE pieces without the prefix space that begin with a letter, digit or
        apostrophe; in the word kind, the letters after a contraction's apostrophe. Punctuation
        and specials do not."""
        flags = [False] * self.vocab_size
        for token, i in self._tokenizer.get_vocab(with_added_tokens=True).items():
            if i < len(SPECIAL_TOKENS) or not token:
                continue
            if self.kind == "bpe":
                suffix = token.startswith("'") and len(token) > 1  # "'t", not a lone quote mark
                flags[i] = suffix or (token[0].isalnum() and not token.startswith(BPE_SPACE))
            else:  # "can't" is "can", "'", "t"
                flags[i] = token in CONTRACTION_SUFFIXES
        return flags

    def encode(self, text: str) -> list[int]:
        """Normalised text -> ids, without special tokens (batching adds those)."""
        return self._tokenizer.encode(normalize_text(text), add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode` for many texts; the library encodes them in parallel."""
        normalized = [normalize_text(text) for text in texts]
        # The fast variant skips character offsets, which nothing here reads.
        encodings = self._tokenizer.encode_batch_fast(normalized, add_special_tokens=False)
        return [encoding.ids for encoding in encodings]

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text, stopping at the first `<eos>` and dropping the other special tokens."""
        return self.decode_batch([ids])[0]

    def decode_batch(self, batch: Sequence[Sequence[int]]) -> list[str]:
        """`decode` for many sequences, e.g. the rows of a generated batch."""
        kept = [_until_eos(ids) for ids in batch]
        if self.kind == "bpe":
            texts = self._tokenizer.decode_batch(kept, skip_special_tokens=True)
            return [text.removeprefix(" ") for text in texts]  # the prefix space of `_bpe`
        return [join_words(self._word_tokens(ids)) for ids in kept]

    def _word_tokens(self, ids: Sequence[int]) -> list[str]:
        # Specials come first in the vocabulary; ids past its end have no token and are dropped.
        tokens = (self._tokenizer.id_to_token(i) for i in ids if i >= len(SPECIAL_TOKENS))
        return [token for token in tokens if token is not None]

    def to_json(self) -> str:
        """The whole state as one JSON string, so a checkpoint can carry it."""
        state = {
            "format": JSON_FORMAT,
            "kind": self.kind,
            "tokenizer": json.loads(self._tokenizer.to_str()),
        }
        return json.dumps(state, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> ChatTokenizer:
        state = json.loads(text)
        if state.get("format") != JSON_FORMAT:
            raise ValueError(f"unsupported tokenizer format {state.get('format')!r}")
        return cls(Tokenizer.from_str(json.dumps(state["tokenizer"])), kind=state["kind"])

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically: a crash mid-write leaves the old file, never half a tokenizer."""
        path = Path(path)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(self.to_json())
                file.flush()
                os.fsync(file.fileno())
            os.chmod(temporary, 0o644)  # mkstemp makes 0600; a tokenizer is no secret
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ChatTokenizer:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- training


def _bpe(config: TokenizerConfig) -> tuple[Tokenizer, trainers.Trainer]:
    """Byte-level BPE: the 256 bytes are the base alphabet, so `<unk>` is never needed."""
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    # A prefix space makes a word one token wherever it stands ("hi" opening a reply is the
    # same "Ġhi" as mid-reply); without it the decoder glues words into loops like "hihihi".
    # `decode_batch` drops the leading space again, so decoding still gives back the text.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        min_frequency=2,  # a merge seen once is noise, not a subword
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    return tokenizer, trainer


def _word(config: TokenizerConfig) -> tuple[Tokenizer, trainers.Trainer]:
    """Word-level: a vocabulary cut by count, not size, as the original project did."""
    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Split(Regex(_WORD_PIECES), behavior="isolated"),
        ]
    )
    trainer = trainers.WordLevelTrainer(
        vocab_size=2**31 - 1,  # no size cap: min_count alone prunes
        min_frequency=config.min_count,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
    )
    return tokenizer, trainer


def _normalized(texts: Iterable[str]) -> Iterator[str]:
    for text in texts:
        normalized = normalize_text(text)
        if normalized:
            yield normalized


def train_tokenizer(texts: Iterable[str], config: TokenizerConfig) -> ChatTokenizer:
    """Train a tokenizer of `config.kind` on the normalised `texts`."""
    _check_kind(config.kind)  # fail before consuming the texts
    tokenizer, trainer = _bpe(config) if config.kind == "bpe" else _word(config)
    tokenizer.train_from_iterator(_normalized(texts), trainer=trainer)
    chat = ChatTokenizer(tokenizer, kind=config.kind)
    for expected, token in enumerate(SPECIAL_TOKENS):
        if chat.token_to_id(token) != expected:
            raise RuntimeError(f"{token} got id {chat.token_to_id(token)}, not {expected}")
    logger.info("trained a %s tokenizer: %d tokens", config.kind, chat.vocab_size)
    return chat
