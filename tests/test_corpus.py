from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from rlchat.corpus import (
    CorpusError,
    UnknownGenreError,
    genre_summaries,
    load_corpus,
    split_of,
    split_pairs,
)

SEP = " +++$+++ "


@pytest.fixture(scope="module")
def excerpt(corpus_dir):
    return load_corpus(corpus_dir)


def write_corpus(directory: Path, *, movies=None, characters=None, lines=None, conversations=None):
    """A tiny corpus in the original format; each argument is a list of raw byte records."""
    defaults = {
        "movie_titles_metadata.txt": [
            SEP.join(["m0", "a comedy", "1999", "6.90", "62847", "['comedy', 'romance']"]),
            SEP.join(["m1", "a musical", "1989/I", "7.10", "10", "['musical']"]),
            SEP.join(["m2", "a music film", "2001", "5.00", "3", "['music', 'music']"]),
        ],
        "movie_characters_metadata.txt": [
            SEP.join(["u0", "BIANCA", "m0", "a comedy", "f", "4"]),
            SEP.join(["u1", "CAMERON", "m0", "a comedy", "m", "3"]),
        ],
        "movie_lines.txt": [
            SEP.join(["L1", "u0", "m0", "BIANCA", "Hi."]),
            SEP.join(["L2", "u1", "m0", "CAMERON", "Hello there."]),
            SEP.join(["L3", "u0", "m0", "BIANCA", "How are you?"]),
            SEP.join(["L4", "u1", "m1", "SINGER", "La la."]),
            SEP.join(["L5", "u0", "m1", "DANCER", "Tra la."]),
            SEP.join(["L6", "u0", "m2", "DJ", "Beat."]),
            SEP.join(["L7", "u1", "m2", "MC", "Drop."]),
        ],
        "movie_conversations.txt": [
            SEP.join(["u0", "u1", "m0", "['L1', 'L2', 'L3']"]),
            SEP.join(["u1", "u0", "m1", "['L4', 'L5']"]),
            SEP.join(["u0", "u1", "m2", "['L6', 'L7']"]),
        ],
    }
    given = {
        "movie_titles_metadata.txt": movies,
        "movie_characters_metadata.txt": characters,
        "movie_lines.txt": lines,
        "movie_conversations.txt": conversations,
    }
    for name, records in defaults.items():
        records = given[name] if given[name] is not None else records
        payload = b"".join(
            (r if isinstance(r, bytes) else r.encode("iso-8859-1")) + b"\n" for r in records
        )
        (directory / name).write_bytes(payload)
    return directory


# --- the real excerpt --------------------------------------------------------------------------


def test_excerpt_has_the_documented_shape(excerpt):
    assert len(excerpt.movies) == 617
    assert len({line.movie_id for line in excerpt.lines.values()}) == 605
    assert len(excerpt.lines) == 239_072
    assert len(excerpt.conversations) == 63_226
    assert len(excerpt.pairs()) == 172_311
    assert excerpt.report.dropped_conversations == 0
    assert not excerpt.report.skipped_lines


def test_every_line_of_every_conversation_exists(excerpt):
    assert all(line_id in excerpt.lines for c in excerpt.conversations for line_id in c.line_ids)


def test_comedy_pairs_count_each_pair_once(excerpt):
    comedy = excerpt.pairs(["comedy"])
    # Three movies list 'comedy' twice in their metadata; counting each tag separately
    # gives the 56,246 the corpus notes quote, counting each pair once gives 656 fewer.
    repeated = Counter(p.movie_id for p in comedy if p.movie_id in {"m74", "m121", "m394"})
    assert sum(repeated.values()) == 656
    assert len(comedy) == 56_246 - 656
    conversations = excerpt.conversations_in(["comedy"])
    assert len({c.id for c in conversations}) == len(conversations)


def test_genre_summaries_agree_with_pair_filtering(excerpt):
    summaries = {s.genre: s for s in genre_summaries(excerpt)}
    for genre in ("comedy", "drama", "music", "musical"):
        assert summaries[genre].pairs == len(excerpt.pairs([genre]))
    pair_counts = [s.pairs for s in summaries.values()]
    assert pair_counts == sorted(pair_counts, reverse=True)


def test_pairs_are_consecutive_lines_of_a_conversation(excerpt):
    conv = excerpt.conversations[0]
    texts = [excerpt.lines[i].text for i in conv.line_ids]
    pairs = [p for p in excerpt.pairs() if p.conversation_id == conv.id]
    assert [(p.source, p.reply) for p in pairs] == list(zip(texts, texts[1:], strict=False))
    assert pairs[-1].history == tuple(texts[: len(texts) - 2])
    assert all(p.genres == ("comedy", "romance") and p.movie_id == "m0" for p in pairs)


def test_latin1_text_is_decoded(excerpt):
    assert any("é" in line.text for line in excerpt.lines.values())


# --- hand-written files with the corpus's edge cases -------------------------------------------


def test_small_corpus_parses(tmp_path):
    corpus = load_corpus(write_corpus(tmp_path))
    assert corpus.movies["m1"].year == 1989
    assert corpus.movies["m0"].rating == pytest.approx(6.9)
    assert corpus.movies["m2"].genres == ("music",)
    assert [(p.source, p.reply) for p in corpus.pairs(["comedy"])] == [
        ("Hi.", "Hello there."),
        ("Hello there.", "How are you?"),
    ]


def test_genre_filter_is_exact(tmp_path):
    corpus = load_corpus(write_corpus(tmp_path))
    assert {p.movie_id for p in corpus.pairs(["music"])} == {"m2"}
    assert {p.movie_id for p in corpus.pairs(["musical"])} == {"m1"}
    assert {p.movie_id for p in corpus.pairs(["Music", "comedy"])} == {"m0", "m2"}


def test_unknown_genre_lists_the_valid_ones(tmp_path):
    corpus = load_corpus(write_corpus(tmp_path))
    with pytest.raises(UnknownGenreError) as error:
        corpus.pairs(["comdy"])
    assert "comdy" in str(error.value)
    assert "comedy, music, musical, romance" in str(error.value)


def test_non_ascii_byte_is_read_as_latin1(tmp_path):
    lines = [
        SEP.encode().join([b"L1", b"u0", b"m0", b"BIANCA", b"Caf\xe9 au lait \x92s"]),
        SEP.join(["L2", "u1", "m0", "CAMERON", "Sure."]),
    ]
    corpus = load_corpus(
        write_corpus(
            tmp_path, lines=lines, conversations=[SEP.join(["u0", "u1", "m0", "['L1', 'L2']"])]
        )
    )
    assert corpus.lines["L1"].text == "Café au lait \x92s"


def test_missing_field_names_file_and_line(tmp_path):
    lines = [
        SEP.join(["L1", "u0", "m0", "BIANCA", "Hi."]),
        SEP.join(["L2", "u1", "m0", "Hello there."]),
    ]
    with pytest.raises(CorpusError) as error:
        load_corpus(write_corpus(tmp_path, lines=lines))
    assert error.value.path.name == "movie_lines.txt"
    assert error.value.line_number == 2
    assert "movie_lines.txt:2: expected 5 fields" in str(error.value)


def test_extra_separator_is_an_error(tmp_path):
    movies = [SEP.join(["m0", "a comedy", "1999", "6.90", "62847", "['comedy']", "extra"])]
    with pytest.raises(
        CorpusError, match=r"movie_titles_metadata.txt:1: expected 6 fields .* found 7"
    ):
        load_corpus(write_corpus(tmp_path, movies=movies))


def test_lenient_parse_skips_and_counts_malformed_records(tmp_path):
    lines = [
        SEP.join(["L1", "u0", "m0", "BIANCA", "Hi."]),
        SEP.join(["L2", "u1", "m0", "broken"]),
        SEP.join(["L3", "u0", "m0", "BIANCA", "How are you?"]),
    ]
    corpus = load_corpus(write_corpus(tmp_path, lines=lines), lenient=True)
    assert corpus.report.skipped_lines["movie_lines.txt"] == 1
    assert "L3" in corpus.lines


def test_bad_number_names_the_field(tmp_path):
    movies = [SEP.join(["m0", "a comedy", "1999", "high", "62847", "['comedy']"])]
    with pytest.raises(CorpusError, match="rating should be a number"):
        load_corpus(write_corpus(tmp_path, movies=movies))


def test_empty_text_is_kept_as_an_empty_line(tmp_path):
    lines = [
        SEP.join(["L1", "u0", "m0", "BIANCA", ""]),
        SEP.join(["L2", "u1", "m0", "CAMERON", "Hello there."]),
    ]
    convs = [SEP.join(["u0", "u1", "m0", "['L1', 'L2']"])]
    corpus = load_corpus(write_corpus(tmp_path, lines=lines, conversations=convs))
    assert corpus.lines["L1"].text == ""
    assert len(corpus.pairs()) == 1


def test_conversation_with_missing_line_is_dropped_and_counted(tmp_path):
    convs = [
        SEP.join(["u0", "u1", "m0", "['L1', 'L2', 'L99']"]),
        SEP.join(["u0", "u1", "m2", "['L6', 'L7']"]),
    ]
    corpus = load_corpus(write_corpus(tmp_path, conversations=convs))
    assert corpus.report.dropped_conversations == 1
    assert [c.id for c in corpus.conversations] == ["m2:L6"]


def test_malformed_line_list_is_an_error(tmp_path):
    convs = [SEP.join(["u0", "u1", "m0", "L1, L2"])]
    with pytest.raises(CorpusError, match="movie_conversations.txt:1: line ids should be a list"):
        load_corpus(write_corpus(tmp_path, conversations=convs))


def test_missing_file_says_how_to_get_the_corpus(tmp_path):
    with pytest.raises(FileNotFoundError, match="rlchat data download"):
        load_corpus(tmp_path)


# --- the split ---------------------------------------------------------------------------------


def test_split_keeps_conversations_whole_and_has_the_asked_shares(excerpt):
    splits = split_pairs(excerpt.pairs(), seed=0)
    conversations = {name: {p.conversation_id for p in pairs} for name, pairs in splits.items()}
    assert not conversations["train"] & conversations["valid"]
    assert not conversations["train"] & conversations["test"]
    assert not conversations["valid"] & conversations["test"]
    total = sum(len(c) for c in conversations.values())
    assert len(conversations["test"]) / total == pytest.approx(0.10, abs=0.007)
    assert len(conversations["valid"]) / total == pytest.approx(0.05, abs=0.005)


def test_split_of_a_conversation_does_not_depend_on_other_data(excerpt):
    pairs = excerpt.pairs(["comedy"])
    full = split_pairs(pairs, seed=3)
    half = split_pairs(pairs[::2], seed=3)
    where = {p.conversation_id: name for name, ps in full.items() for p in ps}
    assert all(where[p.conversation_id] == name for name, ps in half.items() for p in ps)


def test_split_by_movie_puts_each_movie_in_one_split(excerpt):
    pairs = excerpt.pairs()
    splits = split_pairs(pairs, seed=0, split_by="movie")
    movies = {name: {p.movie_id for p in ps} for name, ps in splits.items()}
    assert not movies["train"] & movies["test"]
    assert not movies["train"] & movies["valid"] and not movies["valid"] & movies["test"]
    assert all(movies.values())
    by_conversation = split_pairs(pairs, seed=0)
    test_movies = {p.movie_id for p in by_conversation["test"]}
    assert test_movies & {p.movie_id for p in by_conversation["train"]}  # the leak it closes


def test_split_by_movie_is_stable_when_movies_are_added(excerpt):
    pairs = excerpt.pairs()
    movie_ids = sorted({p.movie_id for p in pairs})
    fewer = [p for p in pairs if p.movie_id in set(movie_ids[::2])]
    full = split_pairs(pairs, seed=4, split_by="movie")
    part = split_pairs(fewer, seed=4, split_by="movie")
    where = {p.movie_id: name for name, ps in full.items() for p in ps}
    assert all(where[p.movie_id] == name for name, ps in part.items() for p in ps)
    with pytest.raises(ValueError, match="split_by"):
        split_pairs(pairs, split_by="line")


def test_split_depends_on_the_seed():
    ids = [f"m0:L{i}" for i in range(2000)]
    first = [split_of(i, seed=0, valid_fraction=0.05, test_fraction=0.05) for i in ids]
    second = [split_of(i, seed=1, valid_fraction=0.05, test_fraction=0.05) for i in ids]
    assert first != second
    assert first == [split_of(i, seed=0, valid_fraction=0.05, test_fraction=0.05) for i in ids]
