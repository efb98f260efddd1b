"""The `rlchat` command: get the corpus, explore it, train, evaluate, chat and serve."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from rlchat import __version__

app = typer.Typer(
    name="rlchat",
    help="A chatbot that learns to talk from movie dialogues (LSTM seq2seq + RL).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Get and explore the Cornell Movie-Dialogs Corpus.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console()
err_console = Console(stderr=True)

CorpusOption = Annotated[
    Path | None,
    typer.Option(
        "--corpus",
        help="Directory with the corpus files (default: $RLCHAT_CORPUS, else the download cache).",
        show_default=False,
    ),
]
GenreOption = Annotated[
    list[str] | None,
    typer.Option("--genre", "-g", help="Keep movies of this genre (repeatable; exact match)."),
]
LenientOption = Annotated[
    bool, typer.Option("--lenient", help="Skip and count malformed corpus records instead of failing.")
]


def fail(message: str) -> None:
    """Print a clear error and exit non-zero, without a traceback."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code=1)


def version_callback(value: bool) -> None:
    if value:
        console.print(f"rlchat {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug logs.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=version_callback, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)],
    )


def open_corpus(corpus: Path | None, lenient: bool = False):  # noqa: ANN201
    """Load the corpus the user pointed at, turning failures into clear CLI errors."""
    from rlchat.corpus import CorpusError, load_corpus
    from rlchat.download import CorpusNotFoundError, resolve_corpus_dir

    try:
        directory = resolve_corpus_dir(corpus)
        with console.status(f"Reading corpus from {directory}", spinner="dots"):
            loaded = load_corpus(directory, lenient=lenient)
    except (CorpusNotFoundError, CorpusError, FileNotFoundError) as error:
        fail(str(error))
    report = loaded.report
    if report.skipped_lines:
        skipped = ", ".join(f"{name}: {count}" for name, count in report.skipped_lines.items())
        err_console.print(f"[yellow]skipped malformed records[/] ({skipped})")
    if report.dropped_conversations:
        err_console.print(
            f"[yellow]dropped {report.dropped_conversations} conversations[/] "
            "that reference missing line ids"
        )
    return loaded


def checked_genres(corpus, genres: list[str] | None) -> list[str]:  # noqa: ANN001
    from rlchat.corpus import UnknownGenreError

    try:
        return corpus.check_genres(genres or [])
    except UnknownGenreError as error:
        fail(str(error))
        raise  # unreachable; keeps type checkers content


# --- data ----------------------------------------------------------------------------------


@data_app.command("download")
def data_download(
    dest: Annotated[
        Path | None,
        typer.Option(help="Where to put the corpus (default: the per-user cache directory)."),
    ] = None,
) -> None:
    """Download the official corpus archive, verify its checksum and shape, and extract it."""
    from rlchat.download import DownloadError, default_corpus_root, download_corpus

    try:
        directory = download_corpus(dest or default_corpus_root())
    except DownloadError as error:
        fail(str(error))
    console.print(f"Corpus ready in [bold]{directory}[/]")


@data_app.command("genres")
def data_genres(
    corpus: CorpusOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    lenient: LenientOption = False,
) -> None:
    """Genres with their movies, conversations and pairs, most pairs first."""
    from rlchat.corpus import genre_summaries

    summaries = genre_summaries(open_corpus(corpus, lenient))
    if as_json:
        print(json.dumps([vars(s) for s in summaries], indent=2))
        return
    table = Table(title="Genres of the Cornell Movie-Dialogs Corpus")
    for column in ("genre", "movies", "conversations", "pairs"):
        table.add_column(column, justify="left" if column == "genre" else "right")
    for s in summaries:
        table.add_row(s.genre, f"{s.movies:,}", f"{s.conversations:,}", f"{s.pairs:,}")
    console.print(table)


@data_app.command("show")
def data_show(
    genre: GenreOption = None,
    n: Annotated[int, typer.Option("-n", min=1, help="How many dialogues to show.")] = 5,
    seed: Annotated[int | None, typer.Option(help="Seed of the sample (default: random).")] = None,
    corpus: CorpusOption = None,
    lenient: LenientOption = False,
) -> None:
    """Show a random sample of raw dialogues, speakers named."""
    loaded = open_corpus(corpus, lenient)
    conversations = loaded.conversations_in(checked_genres(loaded, genre))
    sample = random.Random(seed).sample(conversations, k=min(n, len(conversations)))
    for conv in sample:
        movie = loaded.movies[conv.movie_id]
        year = f" ({movie.year})" if movie.year else ""
        console.rule(f"[bold]{movie.title.title()}{year}[/] · {', '.join(movie.genres)}", align="left")
        for line_id in conv.line_ids:
            line = loaded.lines[line_id]
            console.print(f"[cyan]{line.character.title():>16}[/]  {line.text}", highlight=False)
    console.print()


@data_app.command("stats")
def data_stats(
    genre: GenreOption = None,
    tokenizer: Annotated[str, typer.Option(help="bpe or word.")] = "bpe",
    max_tokens: Annotated[int, typer.Option(min=1, help="Drop pairs with a longer side.")] = 20,
    min_count: Annotated[int, typer.Option(min=1, help="word: drop words seen fewer times.")] = 10,
    vocab_size: Annotated[int, typer.Option(min=300, help="bpe: vocabulary size.")] = 8000,
    corpus: CorpusOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    lenient: LenientOption = False,
) -> None:
    """Pairs before and after each filter, vocabulary size and length percentiles, per split."""
    from rlchat.config import DataConfig, TokenizerConfig
    from rlchat.dataset import prepare_dataset

    if tokenizer not in ("bpe", "word"):
        fail(f"--tokenizer must be 'bpe' or 'word', got {tokenizer!r}")
    loaded = open_corpus(corpus, lenient)
    data_config = DataConfig(genres=checked_genres(loaded, genre), lenient=lenient)
    tok_config = TokenizerConfig(
        kind=tokenizer, vocab_size=vocab_size, min_count=min_count, max_tokens=max_tokens
    )
    with console.status("Training the tokenizer and encoding pairs", spinner="dots"):
        dataset = prepare_dataset(loaded, data_config, tok_config)
    stats = dataset.stats()
    if as_json:
        print(json.dumps(stats, indent=2))
        return
    console.print(
        f"[bold]{', '.join(data_config.genres) or 'all genres'}[/] · tokenizer "
        f"{tokenizer} · vocabulary {stats['vocab_size']:,} · max tokens {max_tokens}"
    )
    filters = Table(title="Pairs after each filter")
    filters.add_column("split")
    steps = list(stats["splits"]["train"]["filters"])
    for step in steps:
        filters.add_column(step.replace("_", " "), justify="right")
    for split, split_stats in stats["splits"].items():
        filters.add_row(split, *(f"{split_stats['filters'][step]:,}" for step in steps))
    console.print(filters)
    lengths = Table(title="Tokens per side (kept pairs): p50 / p90 / p99 / max")
    lengths.add_column("split")
    lengths.add_column("source", justify="right")
    lengths.add_column("reply", justify="right")
    for split, split_stats in stats["splits"].items():
        cells = [
            " / ".join(str(v) for v in split_stats["lengths"][side].values())
            for side in ("source", "reply")
        ]
        lengths.add_row(split, *cells)
    console.print(lengths)
