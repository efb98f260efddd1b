"""The Cornell Movie-Dialogs Corpus: files -> movies, characters, lines, conversations, pairs.

Corpus: Danescu-Niculescu-Mizil & Lee, "Chameleons in imagined conversations", 2011.
Each file holds one record per line, fields separated by ``" +++$+++ "``, in ISO-8859-1.
A *pair* is two consecutive utterances of one conversation: (source, reply).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rlchat.config import DataConfig

logger = logging.getLogger(__name__)

SEPARATOR = " +++$+++ "
ENCODING = "iso-8859-1"
MOVIES_FILE = "movie_titles_metadata.txt"
CHARACTERS_FILE = "movie_characters_metadata.txt"
LINES_FILE = "movie_lines.txt"
CONVERSATIONS_FILE = "movie_conversations.txt"
CORPUS_FILES = (MOVIES_FILE, CHARACTERS_FILE, LINES_FILE, CONVERSATIONS_FILE)

Split = Literal["train", "valid", "test"]
SPLITS: tuple[Split, ...] = ("train", "valid", "test")


class CorpusError(ValueError):
    """A corpus file that cannot be read; the message names the file and line."""

    def __init__(self, path: Path, line_number: int, problem: str) -> None:
        super().__init__(f"{path}:{line_number}: {problem}")
        self.path = path
        self.line_number = line_number
        self.problem = problem


class UnknownGenreError(ValueError):
    """A genre that no movie of the corpus has."""

    def __init__(self, unknown: Sequence[str], valid: Sequence[str]) -> None:
        super().__init__(
            f"unknown genre(s): {', '.join(unknown)}; valid genres: {', '.join(valid)}"
        )
        self.unknown = list(unknown)
        self.valid = list(valid)


@dataclass(frozen=True, slots=True)
class Movie:
    id: str
    title: str
    year: int | None
    rating: float
    votes: int
    genres: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Character:
    id: str
    name: str
    movie_id: str
    gender: str
    position: str


@dataclass(frozen=True, slots=True)
class Line:
    id: str
    character_id: str
    movie_id: str
    character: str
    text: str


@dataclass(frozen=True, slots=True)
class Conversation:
    """An exchange between two characters. Its id is stable: movie and first line id."""

    id: str
    movie_id: str
    character_ids: tuple[str, str]
    line_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Pair:
    """Consecutive utterances (source -> reply), with where they come from.

    ``history`` holds the utterances before ``source`` in the conversation, oldest first,
    so a run with context turns can prepend them.
    """

    source: str
    reply: str
    movie_id: str
    conversation_id: str
    genres: tuple[str, ...]
    history: tuple[str, ...] = ()


@dataclass
class ParseReport:
    """What a lenient parse skipped and what any parse dropped, for the user to see."""

    skipped_lines: Counter[str] = field(default_factory=Counter)
    dropped_conversations: int = 0


@dataclass
class Corpus:
    movies: dict[str, Movie]
    characters: dict[str, Character]
    lines: dict[str, Line]
    conversations: list[Conversation]
    report: ParseReport

    @property
    def genres(self) -> list[str]:
        """Every genre that some movie has, sorted."""
        return sorted({genre for movie in self.movies.values() for genre in movie.genres})

    def check_genres(self, genres: Iterable[str]) -> list[str]:
        """Lower-cased genres, or UnknownGenreError listing the valid ones."""
        wanted = [genre.strip().lower() for genre in genres]
        unknown = [genre for genre in wanted if genre not in set(self.genres)]
        if unknown:
            raise UnknownGenreError(unknown, self.genres)
        return wanted

    def conversations_in(self, genres: Iterable[str] = ()) -> list[Conversation]:
        """Conversations of movies having any of ``genres`` (exact match); all when empty."""
        wanted = set(self.check_genres(genres))
        if not wanted:
            return list(self.conversations)
        return [
            conv
            for conv in self.conversations
            if wanted.intersection(self.movies[conv.movie_id].genres)
        ]

    def pairs(self, genres: Iterable[str] = ()) -> list[Pair]:
        """All consecutive-utterance pairs of the conversations in ``genres``."""
        return list(iter_pairs(self, self.conversations_in(genres)))


def iter_pairs(corpus: Corpus, conversations: Iterable[Conversation]) -> Iterator[Pair]:
    """Yield (source, reply) pairs in conversation order."""
    for conv in conversations:
        texts = [corpus.lines[line_id].text for line_id in conv.line_ids]
        genres = corpus.movies[conv.movie_id].genres
        for turn in range(len(texts) - 1):
            yield Pair(
                source=texts[turn],
                reply=texts[turn + 1],
                movie_id=conv.movie_id,
                conversation_id=conv.id,
                genres=genres,
                history=tuple(texts[:turn]),
            )


def split_of(unit_id: str, *, seed: int, valid_fraction: float, test_fraction: float) -> Split:
    """The split of one conversation (or movie): a function of its id and the seed only.

    Hashing the id (not shuffling a list) keeps each unit in its split when others are
    added or removed.
    """
    digest = hashlib.blake2b(f"{seed}:{unit_id}".encode(), digest_size=8).digest()
    position = int.from_bytes(digest, "big") / 2**64  # uniform in [0, 1)
    if position < test_fraction:
        return "test"
    if position < test_fraction + valid_fraction:
        return "valid"
    return "train"


def split_pairs(
    pairs: Iterable[Pair],
    *,
    seed: int = 0,
    valid_fraction: float = DataConfig.valid_fraction,
    test_fraction: float = DataConfig.test_fraction,
    split_by: str = DataConfig.split_by,
) -> dict[Split, list[Pair]]:
    """Pairs by split; all pairs of a conversation (``split_by="movie"``: of a movie) land in
    the same split. Movie ids are hashed with a prefix, so the two kinds never coincide."""
    if valid_fraction < 0 or test_fraction < 0 or valid_fraction + test_fraction >= 1:
        raise ValueError("valid and test fractions must be >= 0 and sum to less than 1")
    if split_by not in ("conversation", "movie"):
        raise ValueError(f"split_by must be conversation or movie, not {split_by!r}")
    result: dict[Split, list[Pair]] = {split: [] for split in SPLITS}
    cache: dict[str, Split] = {}
    for pair in pairs:
        unit = pair.conversation_id if split_by == "conversation" else f"movie:{pair.movie_id}"
        split = cache.get(unit)
        if split is None:
            split = split_of(
                unit, seed=seed, valid_fraction=valid_fraction, test_fraction=test_fraction
            )
            cache[unit] = split
        result[split].append(pair)
    return result


# --- parsing -------------------------------------------------------------------------------


def _records(
    path: Path, n_fields: int, report: ParseReport, lenient: bool
) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-empty record; a wrong field count is an error."""
    if not path.is_file():
        raise FileNotFoundError(
            f"corpus file {path} not found; run `rlchat data download` or pass --corpus DIR"
        )
    with path.open("r", encoding=ENCODING, newline="\n") as handle:
        for number, raw in enumerate(handle, start=1):
            record = raw.rstrip("\n").rstrip("\r")
            if not record.strip():
                continue
            fields = record.split(SEPARATOR)
            if len(fields) == n_fields - 1 and record.endswith(SEPARATOR.rstrip()):
                # An empty last field whose trailing space was stripped by an editor.
                fields = record[: -len(SEPARATOR.rstrip())].split(SEPARATOR) + [""]
            if len(fields) != n_fields:
                problem = (
                    f"expected {n_fields} fields separated by '{SEPARATOR.strip()}', "
                    f"found {len(fields)}"
                )
                if lenient:
                    report.skipped_lines[path.name] += 1
                    logger.warning("skipping %s:%d: %s", path, number, problem)
                    continue
                raise CorpusError(path, number, problem)
            yield number, fields


def _parse_list(text: str, path: Path, number: int, field_name: str) -> tuple[str, ...]:
    """Parse the corpus's Python-style list of strings, e.g. ``['L1', 'L2']``."""
    text = text.strip()
    if not (text.startswith("[") and text.endswith("]")):
        raise CorpusError(
            path, number, f"{field_name} should be a list like ['a', 'b'], got {text!r}"
        )
    inner = text[1:-1].strip()
    if not inner:
        return ()
    items = []
    for item in inner.split(","):
        item = item.strip()
        if len(item) < 3 or item[0] != item[-1] or item[0] not in "'\"":
            raise CorpusError(path, number, f"{field_name} has a malformed item {item!r}")
        items.append(item[1:-1])
    return tuple(items)


def _guard(path: Path, number: int, what: str, parse, value: str):  # noqa: ANN001, ANN202
    try:
        return parse(value)
    except ValueError:
        raise CorpusError(path, number, f"{what} should be a number, got {value!r}") from None


def _parse_year(value: str) -> int | None:
    # Some years carry an IMDb disambiguation suffix, e.g. "1989/I".
    digits = value.strip()[:4]
    return int(digits) if digits.isdigit() else None


def parse_movies(path: Path, report: ParseReport, lenient: bool = False) -> dict[str, Movie]:
    movies: dict[str, Movie] = {}
    for number, (movie_id, title, year, rating, votes, genres) in _records(
        path, 6, report, lenient
    ):
        movies[movie_id] = Movie(
            id=movie_id,
            title=title,
            year=_parse_year(year),
            rating=_guard(path, number, "rating", float, rating),
            votes=_guard(path, number, "votes", int, votes),
            # Some movies list a genre twice; a pair belongs to a genre once.
            genres=tuple(
                dict.fromkeys(
                    g.strip().lower() for g in _parse_list(genres, path, number, "genres")
                )
            ),
        )
    return movies


def parse_characters(
    path: Path, report: ParseReport, lenient: bool = False
) -> dict[str, Character]:
    return {
        char_id: Character(
            id=char_id, name=name, movie_id=movie_id, gender=gender, position=position
        )
        for _, (char_id, name, movie_id, _title, gender, position) in _records(
            path, 6, report, lenient
        )
    }


def parse_lines(path: Path, report: ParseReport, lenient: bool = False) -> dict[str, Line]:
    return {
        line_id: Line(
            id=line_id, character_id=char_id, movie_id=movie_id, character=name, text=text
        )
        for _, (line_id, char_id, movie_id, name, text) in _records(path, 5, report, lenient)
    }


def parse_conversations(
    path: Path, lines: dict[str, Line], report: ParseReport, lenient: bool = False
) -> list[Conversation]:
    """Conversations whose every line exists; the others are dropped and counted."""
    conversations = []
    for number, (first, second, movie_id, line_list) in _records(path, 4, report, lenient):
        try:
            line_ids = _parse_list(line_list, path, number, "line ids")
        except CorpusError:
            if not lenient:
                raise
            report.skipped_lines[path.name] += 1
            continue
        if not line_ids:
            continue
        if any(line_id not in lines for line_id in line_ids):
            report.dropped_conversations += 1
            continue
        conversations.append(
            Conversation(
                id=f"{movie_id}:{line_ids[0]}",
                movie_id=movie_id,
                character_ids=(first, second),
                line_ids=line_ids,
            )
        )
    if report.dropped_conversations:
        logger.info(
            "dropped %d conversations that reference missing line ids",
            report.dropped_conversations,
        )
    return conversations


def load_corpus(directory: Path, *, lenient: bool = False) -> Corpus:
    """Parse the four corpus files in ``directory``.

    Strict by default: a malformed record raises CorpusError naming file and line;
    ``lenient`` skips such records and counts them in ``Corpus.report``.
    """
    directory = Path(directory)
    report = ParseReport()
    movies = parse_movies(directory / MOVIES_FILE, report, lenient)
    characters = parse_characters(directory / CHARACTERS_FILE, report, lenient)
    lines = parse_lines(directory / LINES_FILE, report, lenient)
    conversations = parse_conversations(directory / CONVERSATIONS_FILE, lines, report, lenient)
    unknown_movies = {conv.movie_id for conv in conversations} - movies.keys()
    if unknown_movies:
        # A conversation of a movie without metadata has no genres; keep it, genre-less.
        for movie_id in unknown_movies:
            movies[movie_id] = Movie(movie_id, title="", year=None, rating=0.0, votes=0, genres=())
    return Corpus(
        movies=movies,
        characters=characters,
        lines=lines,
        conversations=conversations,
        report=report,
    )


# --- summaries -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GenreSummary:
    genre: str
    movies: int
    conversations: int
    pairs: int


def genre_summaries(corpus: Corpus) -> list[GenreSummary]:
    """Movies (with conversations), conversations and pairs per genre, most pairs first."""
    movies: dict[str, set[str]] = {}
    conversations: Counter[str] = Counter()
    pairs: Counter[str] = Counter()
    for conv in corpus.conversations:
        for genre in corpus.movies[conv.movie_id].genres:
            movies.setdefault(genre, set()).add(conv.movie_id)
            conversations[genre] += 1
            pairs[genre] += len(conv.line_ids) - 1
    summaries = [
        GenreSummary(
            genre, movies=len(movies[genre]), conversations=conversations[genre], pairs=pairs[genre]
        )
        for genre in movies
    ]
    return sorted(summaries, key=lambda s: (-s.pairs, s.genre))
