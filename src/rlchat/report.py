"""A report of one or more runs: training curves (PNG), evaluation tables and sample replies.

``write_report`` turns run directories into ``report.md`` plus the files it embeds, so a
comparison of a cross-entropy run with its RL fine-tune can be read without TensorBoard.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rlchat.chatbot import Chatbot
from rlchat.checkpoint import CheckpointError, atomic_write_bytes, atomic_write_text
from rlchat.config import DecodeConfig
from rlchat.runs import RunDir, RunError, read_metrics
from rlchat.significance import interval_variance, normal_p_value

logger = logging.getLogger(__name__)

# Short, context-free openers: what a person types first, and where dull replies show most.
EVERYDAY_PROMPTS = (
    "hi",
    "how are you?",
    "what's your name?",
    "where are you going?",
    "i love you",
    "do you want to go out tonight?",
    "what happened?",
    "who are you?",
    "are you crazy?",
    "goodbye",
)

CE_PLOT = "training_ce.png"
RL_PLOT = "training_rl.png"
REWARDS_PLOT = "rewards.png"
SAMPLES_FILE = "samples.md"
REPORT_FILE = "report.md"

# The evaluation's two tables: figures judged against the references, and figures of the
# replies alone (which the held-out replies themselves also get).
REFERENCE_FIGURES = ("reward", "bleu2", "sacrebleu", "perplexity")
REPLY_FIGURES = (
    "top1",
    "unique",
    "entropy",
    "distinct1",
    "distinct2",
    "length",
    "dull_rate",
    "stock_rate",
    "repetition_rate",
    "nonword_rate",
    "selfplay_turns",
)
# Most metrics are fractions (3 decimals); these live on larger scales.
METRIC_FORMATS = {
    "perplexity": ".1f",
    "sacrebleu": ".2f",
    "length": ".2f",
    "selfplay_turns": ".2f",
    "entropy": ".2f",
    "bleu2": ".4f",
}
LINE_STYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "v")
SPARSE_POINTS = 50


# --- run data --------------------------------------------------------------------------------


@dataclass
class RunCurves:
    """What the plots need from a run directory: its name, stage, genres and metric records."""

    name: str
    stage: str
    genres: list[str]
    records: list[dict[str, Any]]

    @classmethod
    def read(cls, path: Path) -> RunCurves:
        run = RunDir(Path(path))
        config = run.read_config()
        return cls(
            name=run.path.name,
            stage=config.get("stage", "ce"),
            genres=list(config.get("data", {}).get("genres", [])),
            records=read_metrics(run.metrics_path),
        )

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """Steps and values of one metric, skipping records without it or with NaN/inf."""
        points = [
            (record["step"], float(record[key]))
            for record in self.records
            if isinstance(record.get(key), int | float) and math.isfinite(record[key])
        ]
        return [step for step, _ in points], [value for _, value in points]

    def metric_names(self) -> set[str]:
        return {key for record in self.records for key in record}

    @property
    def label(self) -> str:
        return f"{self.name} ({self.stage})"


# --- plots -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Panel:
    """One axes: each (metric key, line label) is drawn once per run, runs told apart by colour."""

    title: str
    lines: tuple[tuple[str, str], ...]
    log_y: bool = False


def ce_panels() -> list[Panel]:
    return [
        Panel("train loss (cross-entropy)", (("ce/loss", "train"),)),
        # Log scale: the first validations sit orders of magnitude above the later ones.
        Panel("validation perplexity", (("valid/perplexity", "valid"),), log_y=True),
    ]


def rl_panels() -> list[Panel]:
    return [
        # SCST learns from the gap between these two (Rennie et al. 2016, eq. 9).
        Panel(
            "train reward",
            (("rl/reward_sample", "sample"), ("rl/reward_greedy", "greedy")),
        ),
        Panel("validation reward", (("valid/reward", "valid"),)),
        Panel("validation BLEU-2", (("valid/bleu2", "valid"),)),
        # The share of the commonest greedy reply: a collapse onto one answer shows here first.
        Panel("validation top1", (("valid/top1", "valid"),)),
    ]


def reward_panels(runs: Sequence[RunCurves]) -> list[Panel]:
    """One panel per reward component, the training mean beside its validation mean."""
    keys = {key for run in runs for key in run.metric_names() if key.startswith("reward/")}
    names = sorted(key.removeprefix("reward/") for key in keys)
    return [
        Panel(f"reward: {name}", ((f"reward/{name}", "train"), (f"valid/reward_{name}", "valid")))
        for name in names
    ]


def _has_data(panel: Panel, runs: Sequence[RunCurves]) -> bool:
    return any(run.series(key)[0] for run in runs for key, _ in panel.lines)


def _draw_panel(axes: Any, panel: Panel, runs: Sequence[RunCurves]) -> None:
    for colour, run in enumerate(runs):
        for style, point, (key, line_label) in zip(LINE_STYLES, MARKERS, panel.lines, strict=False):
            steps, values = run.series(key)
            if not steps:
                continue
            label = run.name if len(panel.lines) == 1 else f"{run.name} {line_label}"
            # Validation runs rarely: without markers a one-point series would not show at all.
            marker = point if len(steps) <= SPARSE_POINTS else None
            axes.plot(
                steps, values, linestyle=style, marker=marker, color=f"C{colour}", label=label
            )
    axes.set_title(panel.title)
    axes.set_xlabel("step")
    if panel.log_y:
        axes.set_yscale("log")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")


def render_panels(panels: Sequence[Panel], runs: Sequence[RunCurves]) -> bytes | None:
    """A PNG of the panels that have data, in a grid of up to three columns; None if none has."""
    panels = [panel for panel in panels if _has_data(panel, runs)]
    if not panels:
        return None
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    # The object API with an explicit Agg canvas: no pyplot state, no display needed.
    figure = Figure(figsize=(4.5 * columns, 3.5 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    for index, panel in enumerate(panels):
        _draw_panel(figure.add_subplot(rows, columns, index + 1), panel, runs)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


# --- markdown --------------------------------------------------------------------------------


def _cell(text: Any) -> str:
    """A markdown table cell: one line, pipes escaped, control characters made visible.

    An undertrained byte-level model can emit any byte; a raw control character would break
    the table or the terminal showing it.
    """
    text = " ".join(str(text).split()).replace("|", "\\|")
    return "".join(char if char.isprintable() else "\ufffd" for char in text)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "---") -> str:
    """A markdown table; ``align`` is the separator of every column after the first."""
    lines = [
        "| " + " | ".join(_cell(h) for h in header) + " |",
        "|---|" + "|".join(align for _ in header[1:]) + "|",
    ]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _format_metric(name: str, value: Any) -> str:
    if not isinstance(value, int | float) or not math.isfinite(value):
        return "—"
    return format(value, METRIC_FORMATS.get(name, ".3f"))


def p_value_of(comparison: dict[str, Any]) -> float:
    """The larger of the randomisation's and the 95% interval's p-values (see
    `rlchat.significance`). An evaluation written before the p-value took both holds the
    randomisation's alone; the interval's is recovered from the interval itself."""
    diff = comparison["diff"]
    interval_p = normal_p_value(diff, interval_variance(diff, comparison["high"]))
    return max(comparison.get("p_value", 0.0), interval_p)


def is_significant(comparison: dict[str, Any], level: float = 0.05) -> bool:
    """Both tests reject "no difference" at `level`."""
    return p_value_of(comparison) < level


def _system_label(run: dict[str, Any]) -> str:
    return f"{run['name']} ({run.get('stage', '?')})"


def figure_tables(
    evaluation: dict[str, Any], group: str = "all"
) -> list[tuple[list[str], list[list[str]]]]:
    """(header, rows) of each figure table, one row per system; figures no system has are left
    out. ``group`` is ``all`` or ``unseen`` (inputs never seen in training)."""
    key = "metrics" if group == "all" else group
    runs = [run for run in evaluation.get("runs", []) if run.get(key)]
    tables = []
    for names in (REFERENCE_FIGURES, REPLY_FIGURES):
        present = [n for n in names if any(n in run[key] for run in runs)]
        if not present:
            continue
        rows = [
            [_system_label(run), *(_format_metric(n, run[key].get(n)) for n in present)]
            for run in runs
            if any(n in run[key] for n in present)  # the held-out replies have no BLEU
        ]
        tables.append((["system", *present], rows))
    return tables


def comparison_table(
    evaluation: dict[str, Any], group: str = "all"
) -> tuple[list[str], list[list[str]]] | None:
    """(header, rows): one row per figure, one column per system minus the first run, each
    cell the difference, its 95% interval and ``*`` where the test rejects no difference."""
    rows_in = [c for c in evaluation.get("comparisons", []) if c.get("group", "all") == group]
    if not rows_in:
        return None
    pairs = list(dict.fromkeys((c["run"], c["baseline"]) for c in rows_in))
    metrics = list(dict.fromkeys(c["metric"] for c in rows_in))
    cells = {(c["run"], c["baseline"], c["metric"]): c for c in rows_in}
    rows = []
    for metric in metrics:
        row = [metric]
        for run, baseline in pairs:
            c = cells.get((run, baseline, metric))
            if c is None:
                row.append("—")
                continue
            fmt = "+.2f" if METRIC_FORMATS.get(metric) in (".1f", ".2f") else "+.4f"
            mark = " *" if is_significant(c) else ""
            low, high = format(c["low"], fmt), format(c["high"], fmt)
            row.append(f"{format(c['diff'], fmt)} [{low}, {high}]{mark}")
        rows.append(row)
    return ["figure", *(f"{run} − {baseline}" for run, baseline in pairs)], rows


def evaluation_summary(evaluation: dict[str, Any]) -> str:
    genres = ", ".join(evaluation.get("genres", [])) or "all genres"
    text = (
        f"Split **{evaluation.get('split', '?')}**, {genres}, {evaluation.get('pairs', '?')} pairs"
    )
    if "clusters" in evaluation:
        text += (
            f" in {evaluation['clusters']} clusters (same conversation or same input; the "
            f"largest holds {evaluation['largest_cluster_share']:.0%}), "
            f"{evaluation['unseen_pairs']} of them with an input never seen in training"
        )
    return text + "."


SIGNIFICANCE_NOTE = (
    "Differences: system − first run, with the 95% interval; `*`: both paired approximate "
    'randomisation over clusters of pairs and the interval reject "no difference" (p < 0.05, '
    "the larger of their p-values). "
    "`dull_rate` and self-play count a list of held-out dull replies that no reward prices; "
    "`stock_rate` counts what the `stock` reward prices."
)


def evaluation_markdown(evaluation: dict[str, Any]) -> str:
    """Systems as rows and figures as columns, for all pairs and for unseen inputs; then the
    differences from the first run with their intervals."""
    parts = [evaluation_summary(evaluation)]
    for group, title in (("all", "All pairs"), ("unseen", "Inputs never seen in training")):
        tables = figure_tables(evaluation, group)
        if not tables:
            continue
        parts.append(f"**{title}**")
        parts += [markdown_table(header, rows, align="---:") for header, rows in tables]
        compared = comparison_table(evaluation, group)
        if compared is not None:
            parts.append(markdown_table(*compared, align="---:"))
    if evaluation.get("comparisons"):
        parts.append(SIGNIFICANCE_NOTE)
    return "\n\n".join(parts)


def describe_decode(config: DecodeConfig) -> str:
    """The decoding settings that shape the replies, so samples can be reproduced."""
    specific = {
        "greedy": (),
        "beam": ("beam_size", "length_penalty"),
        "sample": ("temperature", "top_k", "top_p"),
    }[config.strategy]
    fields = [*specific, "max_tokens", "no_repeat_ngram"]
    return f"{config.strategy} (" + ", ".join(f"{f}={getattr(config, f)}" for f in fields) + ")"


def samples_markdown(
    runs: Sequence[RunCurves],
    replies: Sequence[Sequence[str]],
    decode: DecodeConfig,
    extra: Sequence[tuple[str, Sequence[str]]] = (),
) -> str:
    """The everyday prompts, one row each, with every run's reply side by side; ``extra``
    adds (label, replies) columns decoded otherwise (a served bot's MMI reranking, say)."""
    labels = [run.label for run in runs] + [label for label, _ in extra]
    replies = [*replies, *(column for _, column in extra)]
    # An empty reply is a finding (the model emitted <eos> first); show it, not a blank.
    rows = [
        [prompt, *(run_replies[index] or "∅" for run_replies in replies)]
        for index, prompt in enumerate(EVERYDAY_PROMPTS)
    ]
    table = markdown_table(["prompt", *labels], rows)
    return f"Decoding of the runs: {describe_decode(decode)}.\n\n{table}"


def runs_markdown(runs: Sequence[RunCurves]) -> str:
    rows = [
        [
            run.name,
            run.stage,
            ", ".join(run.genres) or "all",
            max((record["step"] for record in run.records), default=0),
        ]
        for run in runs
    ]
    return markdown_table(["run", "stage", "genres", "last step"], rows)


# --- samples ---------------------------------------------------------------------------------


def everyday_replies(path: Path, decode: DecodeConfig) -> list[str]:
    """One batched decode of the everyday prompts; a run without a usable model says so."""
    try:
        bot = Chatbot.load(path)
    except (RunError, CheckpointError) as error:
        logger.warning("no samples for %s: %s", path, error)
        return ["(no model)"] * len(EVERYDAY_PROMPTS)
    return bot.reply_batch(list(EVERYDAY_PROMPTS), config=decode)


# --- writing ---------------------------------------------------------------------------------


def write_plots(runs: Sequence[RunCurves], out: Path) -> list[tuple[str, str]]:
    """The plots that have data, written to ``out``; returns (section title, file name) of each."""
    figures = [
        ("Cross-entropy training", CE_PLOT, ce_panels()),
        ("Self-critical RL training", RL_PLOT, rl_panels()),
        ("Reward components", REWARDS_PLOT, reward_panels(runs)),
    ]
    written = []
    for title, name, panels in figures:
        png = render_panels(panels, runs)
        if png is None:
            logger.info("no data for %s; not drawn", name)
            (out / name).unlink(missing_ok=True)  # a stale plot from an earlier report would lie
            continue
        atomic_write_bytes(out / name, png)
        written.append((title, name))
    return written


def write_report(
    runs: list[Path],
    out: Path,
    evaluation: dict | None = None,
    decode: DecodeConfig | None = None,
    extra_samples: Sequence[tuple[str, Sequence[str]]] = (),
) -> Path:
    """Write plots, ``samples.md`` and ``report.md`` (which embeds them) to ``out``; returns
    the path of ``report.md``. ``extra_samples``: more (label, replies) columns of samples."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    decode = decode or DecodeConfig()
    curves = [RunCurves.read(path) for path in runs]
    plots = write_plots(curves, out)
    samples = samples_markdown(
        curves, [everyday_replies(p, decode) for p in runs], decode, extra_samples
    )
    atomic_write_text(out / SAMPLES_FILE, f"# Everyday prompts\n\n{samples}\n")
    sections = ["# rlchat report", "## Runs", runs_markdown(curves)]
    if plots:
        sections.append("## Training")
        for title, name in plots:
            sections += [f"### {title}", f"![{title}]({name})"]
    if evaluation is not None:
        sections += ["## Evaluation", evaluation_markdown(evaluation)]
    sections += ["## Everyday prompts", samples]
    path = out / REPORT_FILE
    atomic_write_text(path, "\n\n".join(sections) + "\n")
    logger.info("report written to %s", path)
    return path
