from __future__ import annotations

from pathlib import Path

import pytest

from rlchat.config import TokenizerConfig
from rlchat.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SEP_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    ChatTokenizer,
    join_words,
    normalize_text,
    train_tokenizer,
)

SEP = " +++$+++ "
SAMPLE_SIZE = 3000
WEIRD_INPUTS = [
    "zzqxj",
    "I ❤️ 🍕 and 🤖!!",
    "東京で会いましょう",
    "naïve façade — «déjà vu»",
    "tab\tand\x00null\x07bell",
    "<eos> <pad> <unk> typed by a user",
    "",
]


@pytest.fixture(scope="module")
def corpus_texts(corpus_dir: Path) -> list[str]:
    """A spread of utterances over the whole excerpt, not only its first movies."""
    lines = (corpus_dir / "movie_lines.txt").read_text(encoding="iso-8859-1").splitlines()
    every = max(1, len(lines) // SAMPLE_SIZE)
    return [line.split(SEP)[4] for line in lines[::every] if line.count(SEP) == 4]


@pytest.fixture(scope="module")
def bpe(corpus_texts: list[str]) -> ChatTokenizer:
    return train_tokenizer(corpus_texts, TokenizerConfig(kind="bpe", vocab_size=1000))


@pytest.fixture(scope="module")
def word(corpus_texts: list[str]) -> ChatTokenizer:
    # min_count 1: every word of the sample is known, so a round trip tests the text, not <unk>.
    return train_tokenizer(corpus_texts, TokenizerConfig(kind="word", min_count=1))


@pytest.fixture(params=["bpe", "word"])
def tokenizer(request: pytest.FixtureRequest, bpe: ChatTokenizer, word: ChatTokenizer):
    return {"bpe": bpe, "word": word}[request.param]


# --------------------------------------------------------------------------- normalize_text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("I can't believe it -- <u>you</u>...", "i can't believe it -- you..."),
        ("<i>Really</i>? <B>NO</B>.", "really? no."),
        ("This is <my> house", "this is my house"),  # emphasis brackets keep the word
        ("</PRE>", ""),
    ],
)
def test_normalize_removes_tags(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Wait--what?", "wait -- what?"),
        ("Wait -- what?", "wait -- what?"),
        ("Wait---------what?", "wait -- what?"),
        ("Yes - sure", "yes -- sure"),
        ("But I\x97", "but i --"),  # cp1252 em dash read as latin-1
        ("So \x96 there", "so -- there"),  # cp1252 en dash
        ("Well \u2014 no", "well -- no"),
        ("Wait -- -- --", "wait --"),
        ("A well-known stiff- necked man", "a well-known stiff- necked man"),
    ],
)
def test_normalize_makes_dashes_one_spaced_token(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("No...", "no..."),
        ("No....", "no..."),
        ("No..", "no..."),
        ("No. . .", "no..."),
        ("No...  ...yes", "no...yes"),
        ("No\u2026", "no..."),
        ("No\x85", "no..."),
        ("Mr. Smith is 3.5 feet.", "mr. smith is 3.5 feet."),
    ],
)
def test_normalize_unifies_ellipses(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("I can ' t go", "i can't go"),
        ("I ' m here", "i'm here"),
        ("don 't", "don't"),
        ("don' t", "don't"),
        ("you ' re, we ' ve, she ' ll, he ' d, it ' s", "you're, we've, she'll, he'd, it's"),
        ("goin' to tell 'em", "goin' to tell 'em"),  # elisions are not contractions
        ("How 'bout it", "how 'bout it"),
    ],
)
def test_normalize_rejoins_split_contractions(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("It\u2019s \u201cfine\u201d", 'it\'s "fine"'),
        ("\u2018Tis", "'tis"),
        ("Don\x92t say \x93no\x94", 'don\'t say "no"'),
        ("Don`t", "don't"),
        ("head\xadquarters", "headquarters"),
        ("*You* did _that_", "you did that"),
    ],
)
def test_normalize_maps_odd_punctuation_to_ascii(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


def test_normalize_collapses_whitespace_and_lower_cases() -> None:
    assert normalize_text("  GET\tOUT\n\n  of   HERE!\xa0 ") == "get out of here!"


def test_normalize_removes_angle_brackets_so_users_cannot_type_special_tokens() -> None:
    assert normalize_text("<eos> hi <pad>") == "eos hi pad"


def test_normalize_is_idempotent_on_the_corpus(corpus_texts: list[str]) -> None:
    once = [normalize_text(text) for text in corpus_texts]
    assert [normalize_text(text) for text in once] == once


# --------------------------------------------------------------------------- special tokens


def test_special_token_ids_are_fixed() -> None:
    assert SPECIAL_TOKENS == ("<pad>", "<unk>", "<bos>", "<eos>", "<sep>")
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID, SEP_ID) == (0, 1, 2, 3, 4)


def test_trained_vocabularies_keep_the_special_ids(tokenizer: ChatTokenizer) -> None:
    assert [tokenizer.token_to_id(token) for token in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]


# --------------------------------------------------------------------------- bpe


def test_bpe_round_trip_gives_the_normalized_corpus_line(
    bpe: ChatTokenizer, corpus_texts: list[str]
) -> None:
    decoded = bpe.decode_batch(bpe.encode_batch(corpus_texts))
    assert decoded == [normalize_text(text) for text in corpus_texts]


@pytest.mark.parametrize("text", WEIRD_INPUTS)
def test_bpe_never_emits_unk_and_round_trips_weird_input(bpe: ChatTokenizer, text: str) -> None:
    ids = bpe.encode(text)
    assert UNK_ID not in ids
    assert all(0 <= i < bpe.vocab_size for i in ids)
    assert bpe.decode(ids) == normalize_text(text)


def test_bpe_reaches_the_target_vocabulary(bpe: ChatTokenizer) -> None:
    assert bpe.kind == "bpe"
    assert bpe.vocab_size == 1000


def test_bpe_learns_subwords(bpe: ChatTokenizer) -> None:
    assert len(bpe.encode("you know what i mean?")) < len("you know what i mean?") / 2


def test_bpe_gives_a_word_the_same_id_at_the_start_and_in_the_middle(bpe: ChatTokenizer) -> None:
    # Without a prefix space "hi" opening a line and " hi" after a word are two tokens, and a
    # decoder that learned the first glues it onto itself ("hihihi").
    (alone,) = bpe.encode("you")
    assert bpe.encode("you you you") == [alone] * 3
    assert bpe.decode([alone, alone]) == "you you"


# --------------------------------------------------------------------------- word level


def test_word_prunes_words_below_min_count() -> None:
    texts = ["the cat sat", "the cat ran", "the dog sat"]  # the: 3, cat: 2, sat: 2, dog/ran: 1
    tokenizer = train_tokenizer(texts, TokenizerConfig(kind="word", min_count=2))
    assert tokenizer.token_to_id("dog") is None
    assert tokenizer.token_to_id("cat") is not None  # exactly min_count stays
    assert tokenizer.encode("The DOG sat") == [
        tokenizer.token_to_id("the"),
        UNK_ID,
        tokenizer.token_to_id("sat"),
    ]
    assert tokenizer.vocab_size == len(SPECIAL_TOKENS) + 3


def test_word_splits_punctuation_and_contractions() -> None:
    text = "I can't go... -- now?!"
    tokenizer = train_tokenizer([text], TokenizerConfig(kind="word", min_count=1))
    tokens = ["i", "can", "'", "t", "go", "...", "--", "now", "?", "!"]
    assert tokenizer.encode(text) == [tokenizer.token_to_id(token) for token in tokens]
    assert tokenizer.vocab_size == len(SPECIAL_TOKENS) + len(tokens)


def test_word_round_trip_keeps_the_ids_of_corpus_lines(
    word: ChatTokenizer, corpus_texts: list[str]
) -> None:
    ids = word.encode_batch(corpus_texts)
    assert word.encode_batch(word.decode_batch(ids)) == ids


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        (["i", "can", "'", "t", "go", "."], "i can't go."),
        (["wait", "--", "what", "?", "!"], "wait -- what?!"),
        (["he", "said", '"', "no", '"', "."], 'he said "no".'),
        (["goin", "'", "to", "tell", "'", "em", "..."], "goin' to tell 'em..."),
        (["a", "same", "-", "sex", "(", "50", "%", ")"], "a same-sex (50%)"),
        (["wait", "-", "--", "no"], "wait- -- no"),  # joined, "---" would be one dash
    ],
)
def test_join_words_reads_naturally(tokens: list[str], expected: str) -> None:
    assert join_words(tokens) == expected


# --------------------------------------------------------------------------- both kinds


def test_encode_adds_no_special_tokens(tokenizer: ChatTokenizer) -> None:
    ids = tokenizer.encode("hello there.")
    assert ids and not set(ids) & {PAD_ID, BOS_ID, EOS_ID, SEP_ID}
    assert tokenizer.encode("") == []


def test_encode_batch_matches_encode(tokenizer: ChatTokenizer, corpus_texts: list[str]) -> None:
    texts = corpus_texts[:50]
    assert tokenizer.encode_batch(texts) == [tokenizer.encode(text) for text in texts]


def test_decode_stops_at_eos_and_skips_other_specials(tokenizer: ChatTokenizer) -> None:
    reply = tokenizer.encode("are you okay?")
    rest = tokenizer.encode("ignored words after the end")
    ids = [BOS_ID, *reply, SEP_ID, EOS_ID, *rest, PAD_ID, PAD_ID]
    assert tokenizer.decode(ids) == tokenizer.decode(reply) == "are you okay?"
    assert tokenizer.decode([EOS_ID, *reply]) == ""


def test_decode_batch_matches_decode(tokenizer: ChatTokenizer) -> None:
    batch = [tokenizer.encode("hi."), [*tokenizer.encode("bye."), EOS_ID, PAD_ID], []]
    assert tokenizer.decode_batch(batch) == ["hi.", "bye.", ""]


def test_user_typed_special_tokens_are_plain_text(tokenizer: ChatTokenizer) -> None:
    assert not set(tokenizer.encode("<eos> <pad> <sep>")) & {PAD_ID, BOS_ID, EOS_ID, SEP_ID}


def test_json_round_trip_keeps_kind_and_encodings(
    tokenizer: ChatTokenizer, corpus_texts: list[str]
) -> None:
    restored = ChatTokenizer.from_json(tokenizer.to_json())
    assert restored.kind == tokenizer.kind
    assert restored.vocab_size == tokenizer.vocab_size
    texts = [*corpus_texts[:200], *WEIRD_INPUTS]
    assert restored.encode_batch(texts) == tokenizer.encode_batch(texts)


def test_save_and_load_keep_encodings_and_leave_no_temporary_file(
    tokenizer: ChatTokenizer, corpus_texts: list[str], tmp_path: Path
) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text("an older file")
    tokenizer.save(path)
    assert list(tmp_path.iterdir()) == [path]
    assert path.stat().st_mode & 0o044 == 0o044  # readable by a server running as another user
    restored = ChatTokenizer.load(path)
    assert restored.kind == tokenizer.kind
    assert restored.encode_batch(corpus_texts[:200]) == tokenizer.encode_batch(corpus_texts[:200])


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown tokenizer kind"):
        train_tokenizer(["hi"], TokenizerConfig(kind="char"))  # type: ignore[arg-type]


def test_continues_word_marks_the_pieces_that_attach_to_the_word_before() -> None:
    texts = ["i don't know.", "don't go, i know!", "running and jumping", "i'm fine."] * 20
    bpe = train_tokenizer(texts, TokenizerConfig(kind="bpe", vocab_size=300))
    flags = bpe.continues_word()
    assert len(flags) == bpe.vocab_size and not any(flags[: len(SPECIAL_TOKENS)])
    don, t = bpe.encode("don't")  # "Ġdon", "'t"
    assert flags[t] and not flags[don]
    assert not any(flags[i] for i in bpe.encode("i know."))  # word starts and punctuation
    start, *rest = bpe.encode("runningjumping")  # an unseen word: "Ġrunning", then pieces
    assert not flags[start] and rest and all(flags[i] for i in rest)
    word = train_tokenizer(texts, TokenizerConfig(kind="word", min_count=1))
    marked = {
        word._tokenizer.id_to_token(i) for i, flag in enumerate(word.continues_word()) if flag
    }
    assert marked == {"t", "m"}
