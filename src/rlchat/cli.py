"""The `rlchat` command: get the corpus, explore it, train, evaluate, chat and serve."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import signal
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table
from rich.text import Text

from rlchat import __version__
from rlchat.cli_options import config_options
from rlchat.config import (
    FINETUNE_EVAL_EVERY,
    FINETUNE_VOCAB_UNLIKELIHOOD,
    CrossEntropyConfig,
    DataConfig,
    DecodeConfig,
    ModelConfig,
    RLConfig,
    TokenizerConfig,
)

app = typer.Typer(
    name="rlchat",
    help="A chatbot that learns to talk from movie dialogues (LSTM seq2seq + RL).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(
    help="Get and explore the Cornell Movie-Dialogs Corpus.", no_args_is_help=True
)
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
    bool,
    typer.Option("--lenient", help="Skip and count malformed corpus records instead of failing."),
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
        typer.Option(
            "--version", callback=version_callback, is_eager=True, help="Show the version."
        ),
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
        console.rule(
            f"[bold]{movie.title.title()}{year}[/] · {', '.join(movie.genres)}", align="left"
        )
        dialogue = Table.grid(padding=(0, 2))
        dialogue.add_column(style="cyan", justify="right", no_wrap=True)
        dialogue.add_column()
        for line_id in conv.line_ids:
            line = loaded.lines[line_id]
            # Text(), not a str: movie lines with [brackets] must not be read as markup.
            dialogue.add_row(Text(line.character.title()), Text(line.text))
        console.print(dialogue, highlight=False)
    console.print()


@data_app.command("stats")
@config_options(TokenizerConfig)
def data_stats(
    tokenizer: TokenizerConfig,
    genre: GenreOption = None,
    corpus: CorpusOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    lenient: LenientOption = False,
) -> None:
    """Pairs before and after each filter, vocabulary size and length percentiles, per split."""
    from rlchat.dataset import prepare_dataset

    loaded = open_corpus(corpus, lenient)
    data_config = DataConfig(genres=checked_genres(loaded, genre), lenient=lenient)
    with console.status("Training the tokenizer and encoding pairs", spinner="dots"):
        dataset = prepare_dataset(loaded, data_config, tokenizer)
    stats = dataset.stats()
    if as_json:
        print(json.dumps(stats, indent=2))
        return
    console.print(
        f"[bold]{', '.join(data_config.genres) or 'all genres'}[/] · tokenizer "
        f"{tokenizer.kind} · vocabulary {stats['vocab_size']:,} · max tokens {tokenizer.max_tokens}"
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


# --- training ------------------------------------------------------------------------------

train_app = typer.Typer(
    help="Train a bot: cross-entropy first, then reinforcement learning.", no_args_is_help=True
)
app.add_typer(train_app, name="train")

DeviceOption = Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")]
BackwardOption = Annotated[
    Path | None,
    typer.Option(help="Backward run (train ce --direction backward) for --rerank mmi."),
]
ProgressOption = Annotated[
    bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")
]


@train_app.command("ce")
@config_options(DataConfig, TokenizerConfig, ModelConfig, CrossEntropyConfig)
def train_ce(
    data: DataConfig,
    tokenizer: TokenizerConfig,
    model: ModelConfig,
    train: CrossEntropyConfig,
    out: Annotated[Path, typer.Option(help="Run directory to create.")] = Path("runs/ce"),
    init: Annotated[
        Path | None,
        typer.Option(
            help="Fine-tune from this CE run: its weights, tokenizer and model shape; this "
            "run's data filter, rate and budget (the split must match)."
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(help="Continue the run in this directory (its saved config wins)."),
    ] = None,
    corpus: CorpusOption = None,
    device: DeviceOption = "auto",
    progress: ProgressOption = True,
) -> None:
    """Train the encoder-decoder with teacher-forced cross-entropy (--direction backward:
    the reply -> input model MMI reranking uses)."""
    from rlchat.checkpoint import CheckpointError
    from rlchat.runs import RunError
    from rlchat.train.cross_entropy import train_cross_entropy

    loaded = open_corpus(corpus, data.lenient)
    if resume is None:
        data.genres = checked_genres(loaded, data.genres)
    try:
        summary = train_cross_entropy(
            out=resume or out,
            corpus=loaded,
            data_config=data,
            tokenizer_config=tokenizer,
            model_config=model,
            train_config=train,
            init=init,
            resume=resume is not None,
            device=device,
            progress=progress,
        )
    except (RunError, CheckpointError) as error:
        fail(str(error))
    console.print(
        f"Trained {summary['steps']} steps ({summary['epochs']} epochs): validation loss "
        f"{summary['valid']['valid/loss']:.3f}, perplexity "
        f"{summary['valid']['valid/perplexity']:.1f}, "
        f"{summary['pairs_per_s']:.0f} pairs/s. Run: [bold]{resume or out}[/]"
    )


@train_app.command("rl")
@config_options(RLConfig)
def train_rl(
    rl: RLConfig,
    init: Annotated[
        Path | None, typer.Option(help="The cross-entropy run to start from (its split is kept).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Run directory to create.")] = Path("runs/rl"),
    resume: Annotated[
        Path | None, typer.Option(help="Continue the RL run in this directory.")
    ] = None,
    corpus: CorpusOption = None,
    device: DeviceOption = "auto",
    progress: ProgressOption = True,
) -> None:
    """Fine-tune a cross-entropy bot with self-critical sequence training (SCST)."""
    from rlchat.checkpoint import CheckpointError
    from rlchat.runs import RunError
    from rlchat.train.scst import train_rl as run_rl

    if init is None and resume is None:
        fail("--init RUN (a cross-entropy run) is required, or --resume an RL run")
    loaded = open_corpus(corpus)
    try:
        summary = run_rl(
            init=init,
            out=resume or out,
            corpus=loaded,
            rl_config=rl,
            resume=resume is not None,
            device=device,
            progress=progress,
        )
    except (RunError, CheckpointError, ValueError) as error:
        fail(str(error))
    valid = summary["valid"]
    console.print(
        f"RL trained {summary['steps']} steps: validation reward {valid['valid/reward']:.3f}, "
        f"BLEU-2 {valid['valid/bleu2']:.4f}, {summary['pairs_per_s']:.1f} pairs/s. "
        f"Run: [bold]{resume or out}[/]"
    )


# --- evaluation ----------------------------------------------------------------------------


@app.command("eval")
@config_options(DecodeConfig)
def evaluate(
    decode: DecodeConfig,
    runs: Annotated[list[Path], typer.Argument(help="Run directories; the first is the baseline.")],
    split: Annotated[str, typer.Option(help="Held-out split: test or valid.")] = "test",
    genre: GenreOption = None,
    reward: Annotated[
        str | None, typer.Option(help="Reward spec (default: the RL run's own reward).")
    ] = None,
    baselines: Annotated[
        str,
        typer.Option(help="Baselines answering the same pairs: random, retrieval, or none."),
    ] = "random,retrieval",
    max_pairs: Annotated[
        int, typer.Option(help="Evaluate this many pairs drawn with --seed (0 = all).")
    ] = 0,
    resamples: Annotated[
        int, typer.Option(min=1, help="Random swaps of the paired randomisation test.")
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of subsets, baselines and the test.")] = 0,
    corpus: CorpusOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a Markdown table.")] = False,
    out: Annotated[Path | None, typer.Option(help="Also write the JSON result here.")] = None,
    backward: BackwardOption = None,
    device: DeviceOption = "auto",
    progress: ProgressOption = True,
) -> None:
    """Evaluate runs and baselines on the same held-out pairs; each system is compared with
    the first run by a paired randomisation test over clusters of dependent pairs."""
    from rlchat.baselines import parse_baselines
    from rlchat.checkpoint import atomic_write_text
    from rlchat.dataset import prepare_dataset
    from rlchat.evaluation import evaluate_runs
    from rlchat.report import evaluation_markdown

    if split not in ("test", "valid"):
        fail(f"--split must be test or valid, got {split!r}")
    try:
        baseline_names = parse_baselines(baselines)
    except ValueError as error:
        fail(f"--baselines: {error}")
    bots = [load_bot(run, device, backward) for run in runs]
    for bot in bots:
        checked_decoding(decode, bot)
    loaded = open_corpus(corpus)
    data_config = bots[0].data_config
    if genre:
        data_config.genres = checked_genres(loaded, genre)
    with console.status("Preparing held-out pairs", spinner="dots"):
        dataset = prepare_dataset(
            loaded, data_config, bots[0].tokenizer_config, tokenizer=bots[0].tokenizer
        )
    splits = dataset.pairs()
    try:
        result = evaluate_runs(
            bots,
            splits,
            split=split,
            decode=decode,
            reward_spec=reward,
            baselines=baseline_names,
            max_pairs=max_pairs,
            resamples=resamples,
            seed=seed,
            progress=progress,
        )
    except ValueError as error:
        fail(str(error))
    if out is not None:
        atomic_write_text(out, json.dumps(result, indent=2))
    if as_json:
        print(json.dumps(result, indent=2))
    elif markdown:
        print(evaluation_markdown(result))
    else:
        print_evaluation(result)


@app.command("report")
def report(
    runs: Annotated[list[Path], typer.Argument(help="Run directories to report on.")],
    out: Annotated[Path, typer.Option(help="Directory for report.md and the plots.")] = Path(
        "report"
    ),
    evaluation: Annotated[
        Path | None, typer.Option("--eval", help="JSON written by `rlchat eval --out`.")
    ] = None,
) -> None:
    """Plots of the training curves, the evaluation table and sample replies, as Markdown."""
    from rlchat.report import write_report

    result = None
    if evaluation is not None:
        try:
            result = json.loads(evaluation.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            fail(f"cannot read evaluation {evaluation}: {error}")
    path = write_report(runs, out, evaluation=result)
    console.print(f"Report written to [bold]{path}[/]")


@app.command("serve")
@config_options(DecodeConfig)
def serve(
    decode: DecodeConfig,
    runs: Annotated[list[Path], typer.Argument(help="Run directories; each is a model.")],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Server processes.")] = 1,
    cors_origin: Annotated[
        list[str] | None, typer.Option(help="Allowed CORS origin (repeatable).")
    ] = None,
    database: Annotated[
        str | None,
        typer.Option(
            help="SQLite path or postgresql://user:password@host/db for ratings and "
            "conversations; replicas behind a proxy share one (default: ratings in the user "
            "data dir, conversations in memory).",
            envvar="RLCHAT_DATABASE",
        ),
    ] = None,
    batch_wait_ms: Annotated[
        float | None, typer.Option(help="Gather concurrent requests this long (0 = off).")
    ] = None,
    max_batch: Annotated[int | None, typer.Option(help="Most requests decoded at once.")] = None,
    backward: BackwardOption = None,
    device: DeviceOption = "auto",
) -> None:
    """Serve bots: REST API (/docs), the original /chat contract, and a chat page at /.
    The decoding options are the defaults of every request (a request may set its own)."""
    start_server(
        runs,
        host=host,
        port=port,
        workers=workers,
        cors_origins=cors_origin or (),
        database=database,
        batch_wait_ms=batch_wait_ms,
        max_batch=max_batch,
        backward=backward,
        decode=decode,
        device=device,
    )


def start_server(
    runs: list[Path],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    decode: DecodeConfig | None = None,
    backward: Path | None = None,
    device: str = "auto",
    **options,  # noqa: ANN003 - the rest of `rlchat.server.serve`'s settings
) -> None:
    from dataclasses import asdict

    from rlchat.runs import RunError
    from rlchat.server import serve as run_server

    defaults = asdict(DecodeConfig())
    decoding = {k: v for k, v in asdict(decode or DecodeConfig()).items() if v != defaults[k]}
    console.print(
        f"Chat page: [bold]http://{host}:{port}/[/]  ·  API docs: http://{host}:{port}/docs"
    )
    # uvicorn finishes in-flight requests on SIGTERM, then re-raises the signal; answering it
    # with a no-op makes that orderly stop a clean exit 0 (what service managers expect).
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        run_server(
            runs,
            host=host,
            port=port,
            device=device,
            backward=backward,
            decoding=decoding,
            **options,
        )
    except (RunError, ValueError) as error:
        fail(str(error))


@app.command("quickstart")
def quickstart(
    genre: GenreOption = None,
    minutes: Annotated[
        float,
        typer.Option(min=1, help="Wall time for everything before the server answers."),
    ] = 20,
    out: Annotated[Path, typer.Option(help="Where the runs, evaluation and report go.")] = Path(
        "runs/quickstart"
    ),
    corpus: CorpusOption = None,
    device: DeviceOption = "auto",
    progress: ProgressOption = True,
    serve_after: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Serve both bots when done.")
    ] = True,
    port: Annotated[int, typer.Option(help="Port of the server.")] = 8000,
    split_by: Annotated[
        str, typer.Option(help="conversation, or movie: no test movie is seen in training.")
    ] = "conversation",
    seed: Annotated[
        int,
        typer.Option(help="Seed of every stage's weights, batches and samples (not of the split)."),
    ] = 0,
    finetune_vocab_unlikelihood: Annotated[
        float,
        typer.Option(min=0, help="--vocab-unlikelihood of the genre fine-tune (0 = off)."),
    ] = FINETUNE_VOCAB_UNLIKELIHOOD,
    finetune_spare_pieces: Annotated[
        bool,
        typer.Option(help="--vocab-unlikelihood-spare-pieces in the genre fine-tune."),
    ] = False,
    finetune_negative_threshold: Annotated[
        float,
        typer.Option(min=0, max=1, help="--negative-threshold of the genre fine-tune (0 = off)."),
    ] = 0.0,
    finetune_vocab_unlikelihood_share: Annotated[
        float,
        typer.Option(min=0.01, max=1, help="--vocab-unlikelihood-share of the genre fine-tune."),
    ] = 1.0,
    finetune_prefix_unlikelihood: Annotated[
        float,
        typer.Option(min=0, help="--prefix-unlikelihood of the genre fine-tune (0 = off)."),
    ] = 0.0,
    finetune_select_top1: Annotated[
        float,
        typer.Option(
            min=0,
            help="--select-top1-weight of the genre fine-tune, validating every "
            f"{FINETUNE_EVAL_EVERY} steps (0 = best/ by loss).",
        ),
    ] = 0.0,
) -> None:
    """Corpus, CE on all genres, a fine-tune on the genre, the backward model, RL,
    evaluation and report within --minutes, then the server (RL with MMI reranking);
    re-run to resume."""
    from rlchat.download import CorpusNotFoundError, resolve_corpus_dir
    from rlchat.quickstart import SERVED, QuickstartPlan, run_quickstart, served_decoding
    from rlchat.report import EVERYDAY_PROMPTS

    if corpus is None:
        try:
            resolve_corpus_dir(None)
        except CorpusNotFoundError:
            data_download(dest=None)
    started = time.monotonic()  # the budget counts from here: the download is not in it
    loaded = open_corpus(corpus)
    genres = checked_genres(loaded, genre or ["comedy"])
    if split_by not in ("conversation", "movie"):
        fail(f"--split-by must be conversation or movie, not {split_by!r}")
    plan = QuickstartPlan(
        out=out,
        genres=genres,
        minutes=minutes,
        device=device,
        progress=progress,
        split_by=split_by,
        seed=seed,
        finetune_vocab_unlikelihood=finetune_vocab_unlikelihood,
        finetune_spare_pieces=finetune_spare_pieces,
        finetune_negative_threshold=finetune_negative_threshold,
        finetune_vocab_unlikelihood_share=finetune_vocab_unlikelihood_share,
        finetune_prefix_unlikelihood=finetune_prefix_unlikelihood,
        finetune_select_top1_weight=finetune_select_top1,
    )
    try:
        evaluation = run_quickstart(plan, loaded, started)
    except KeyboardInterrupt:
        fail(f"interrupted; run the same command again to resume from {out}")
    print_evaluation(evaluation)
    served = load_bot(plan.rl_dir, device, plan.backward_dir)
    columns = [
        ("ce", load_bot(plan.ce_dir, device), DecodeConfig()),
        ("rl", served, DecodeConfig()),
        (f"{SERVED} (served)", served, served_decoding()),
    ]
    table = Table(title="Everyday prompts")
    table.add_column("you")
    answers = []
    for label, bot, decode in columns:
        table.add_column(label)
        answers.append(bot.reply_batch(list(EVERYDAY_PROMPTS), config=decode))
    for prompt, *replies in zip(EVERYDAY_PROMPTS, *answers, strict=True):
        table.add_row(Text(prompt), *(Text(r) for r in replies))
    console.print(table)
    console.print(f"Report: [bold]{plan.report_dir / 'report.md'}[/]")
    console.print(
        f"Chat in the terminal: [bold]rlchat chat {plan.rl_dir} --backward {plan.backward_dir} "
        "--strategy sample --top-p 0.75 --rerank mmi[/]"
    )
    if serve_after:
        start_server(
            [plan.rl_dir, plan.ce_dir],
            port=port,
            device=device,
            backward=plan.backward_dir,
            decode=served_decoding(),
        )


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    table = Table(title=title)
    for index, column in enumerate(header):
        table.add_column(column, justify="right" if index else "left")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    console.print(table)


def print_evaluation(result: dict) -> None:
    from rlchat.report import comparison_table, evaluation_summary, figure_tables

    console.print(Text(evaluation_summary(result).replace("**", "")))
    for group, title in (("all", "all pairs"), ("unseen", "inputs never seen in training")):
        for header, rows in figure_tables(result, group):
            print_table(title, header, rows)
        compared = comparison_table(result, group)
        if compared is not None:
            print_table(f"{title}: difference [95% interval], * = significant", *compared)


# --- talking to a bot ----------------------------------------------------------------------


def load_bot(run: Path, device: str = "auto", backward: Path | None = None):  # noqa: ANN201
    from rlchat.chatbot import Chatbot
    from rlchat.checkpoint import CheckpointError
    from rlchat.runs import RunError

    try:
        return Chatbot.load(run, device=device, backward=backward)
    except (CheckpointError, RunError, FileNotFoundError, ValueError) as error:
        fail(str(error))


def checked_decoding(decode: DecodeConfig, bot) -> DecodeConfig:  # noqa: ANN001
    """Fail with the reason before decoding, for settings the bot cannot decode with."""
    from rlchat.rerank import check_rerank

    try:
        check_rerank(decode, has_backward=bot is not None and bot.backward is not None)
    except ValueError as error:
        fail(str(error))
    if decode.rerank == "mmi" and decode.strategy == "greedy":
        from rlchat.rerank import GREEDY_MMI_HINT

        err_console.print(f"[yellow]warning:[/] {GREEDY_MMI_HINT}", highlight=False)
    return decode


@app.command("reply")
@config_options(DecodeConfig)
def reply(
    decode: DecodeConfig,
    run: Annotated[Path, typer.Argument(help="Run directory of a trained bot.")],
    message: Annotated[str, typer.Argument(help="What you say to the bot.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    seed: Annotated[int, typer.Option(help="Seed for sampling.")] = 0,
    backward: BackwardOption = None,
    device: DeviceOption = "auto",
) -> None:
    """Answer one message and exit (for scripts)."""
    import torch

    bot = load_bot(run, device, backward)
    checked_decoding(decode, bot)
    answer = bot.reply(message, config=decode, generator=torch.Generator().manual_seed(seed))
    if as_json:
        print(json.dumps({"message": message, "reply": answer, "model": bot.name}))
    else:
        print(answer)


CHAT_HELP = (
    "Commands: /quit, /reset (forget the conversation), "
    "/strategy greedy|beam|sample [key=value ...] (e.g. /strategy beam beam_size=3), /help"
)


def parse_strategy(words: list[str], current: DecodeConfig) -> DecodeConfig:
    """`/strategy beam beam_size=3` -> a new DecodeConfig; ValueError names what is wrong."""
    from dataclasses import fields, replace

    if not words or words[0] not in ("greedy", "beam", "sample"):
        raise ValueError("usage: /strategy greedy|beam|sample [key=value ...]")
    kinds = {f.name: f for f in fields(DecodeConfig)}
    changes: dict[str, object] = {"strategy": words[0]}
    for word in words[1:]:
        key, _, value = word.partition("=")
        if key not in kinds or key == "strategy" or not value:
            raise ValueError(f"unknown setting {word!r}; settings: {', '.join(sorted(kinds))}")
        kind = type(getattr(current, key))
        changes[key] = value if kind is str else kind(value)
    return replace(current, **changes)


@app.command("chat")
@config_options(DecodeConfig)
def chat(
    decode: DecodeConfig,
    run: Annotated[Path, typer.Argument(help="Run directory of a trained bot.")],
    seed: Annotated[int, typer.Option(help="Seed for sampling.")] = 0,
    backward: BackwardOption = None,
    device: DeviceOption = "auto",
) -> None:
    """Chat with a bot in the terminal."""
    import sys

    import torch

    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (arrow keys and history for input())
    bot = load_bot(run, device, backward)
    checked_decoding(decode, bot)
    generator = torch.Generator().manual_seed(seed)
    interactive = sys.stdin.isatty()
    genres = ", ".join(bot.genres) or "all genres"
    console.print(f"[bold]{bot.name}[/] ({bot.stage}, {genres}) · {CHAT_HELP}")
    history: list[str] = []
    while True:
        try:
            message = input("you> " if interactive else "")
        except (EOFError, KeyboardInterrupt):
            break
        message = message.strip()
        if not message:
            continue
        if message.startswith("/"):
            command, *words = message[1:].split()
            if command in ("quit", "exit", "q"):
                break
            if command == "reset":
                history.clear()
                console.print("[dim](conversation reset)[/]")
            elif command == "strategy":
                try:
                    decode = parse_strategy(words, decode)
                    from rlchat.rerank import check_rerank

                    check_rerank(decode, has_backward=bot.backward is not None)
                    console.print(f"[dim](decoding: {decode})[/]")
                except ValueError as error:
                    console.print(f"[red]{error}[/]")
            else:
                console.print(CHAT_HELP)
            continue
        answer = bot.reply(message, history, config=decode, generator=generator)
        history.extend([message, answer])
        console.print(f"[bold cyan]bot>[/] {answer}", highlight=False)
