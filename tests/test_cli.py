from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rlchat.cli import app, parse_strategy
from rlchat.config import DecodeConfig

runner = CliRunner()


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input, catch_exceptions=False)


def test_genres_json_matches_the_corpus_facts(corpus_dir):
    result = invoke("data", "genres", "--json", "--corpus", str(corpus_dir))
    assert result.exit_code == 0
    rows = {row["genre"]: row for row in json.loads(result.stdout)}
    # 56,246 comedy pairs counting each of a movie's genre tags; three movies tag comedy twice.
    assert rows["comedy"]["pairs"] == 56_246 - 656
    assert rows["comedy"]["movies"] == 158
    pairs = [row["pairs"] for row in rows.values()]
    assert pairs == sorted(pairs, reverse=True)


def test_unknown_genre_is_a_clear_error(corpus_dir):
    result = invoke("data", "show", "--genre", "comdy", "--corpus", str(corpus_dir))
    assert result.exit_code == 1
    assert "unknown genre(s): comdy" in result.stderr
    assert "comedy" in result.stderr


def test_missing_corpus_says_what_to_do(tmp_path):
    result = invoke("data", "genres", "--corpus", str(tmp_path))
    assert result.exit_code == 1
    assert "rlchat data download" in result.stderr


def test_show_prints_speakers_and_lines(corpus_dir):
    result = invoke(
        "data", "show", "-g", "comedy", "-n", "2", "--seed", "3", "--corpus", str(corpus_dir)
    )
    assert result.exit_code == 0
    again = invoke(
        "data", "show", "-g", "comedy", "-n", "2", "--seed", "3", "--corpus", str(corpus_dir)
    )
    assert result.stdout == again.stdout
    assert "comedy" in result.stdout


def test_stats_counts_pairs_after_each_filter(corpus_dir):
    result = invoke(
        "data",
        "stats",
        "-g",
        "comedy",
        "--tokenizer",
        "word",
        "--json",
        "--corpus",
        str(corpus_dir),
    )
    assert result.exit_code == 0
    stats = json.loads(result.stdout)
    filters = stats["splits"]["train"]["filters"]
    assert filters["all"] >= filters["no_empty_side"] >= filters["max_tokens"] > 0
    assert sum(s["filters"]["all"] for s in stats["splits"].values()) == 56_246 - 656
    assert stats["splits"]["train"]["lengths"]["reply"]["max"] <= 20


@pytest.fixture(scope="module")
def tiny_run(corpus_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    result = invoke(
        "train", "ce", "--genre", "comedy", "--out", str(out), "--corpus", str(corpus_dir),
        "--vocab-size", "400", "--max-tokens", "8", "--embedding-dim", "16", "--hidden-size", "32",
        "--max-steps", "5", "--batch-size", "16", "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "Trained 5 steps" in result.stdout
    return out


def test_reply_answers_any_input_as_json(tiny_run):
    result = invoke("reply", str(tiny_run), "zxqv blorf?", "--json")
    assert result.exit_code == 0
    answer = json.loads(result.stdout)
    assert answer["message"] == "zxqv blorf?" and isinstance(answer["reply"], str)


def test_a_backward_run_fine_tuned_from_a_run_reranks_replies(tiny_run, corpus_dir):
    backward = tiny_run.parent / "backward"
    result = invoke(
        "train", "ce", "--init", str(tiny_run), "--direction", "backward", "--genre", "comedy",
        "--out", str(backward), "--corpus", str(corpus_dir), "--max-steps", "3",
        "--batch-size", "16", "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads((backward / "run.json").read_text())["data"]["direction"] == "backward"
    mmi = ["--strategy", "sample", "--rerank", "mmi", "--candidates", "4", "--json"]
    result = invoke("reply", str(tiny_run), "how are you?", *mmi, "--backward", str(backward))
    assert result.exit_code == 0, result.stderr
    assert isinstance(json.loads(result.stdout)["reply"], str)
    missing = invoke("reply", str(tiny_run), "how are you?", *mmi)
    assert missing.exit_code == 1 and "--backward" in missing.stderr
    greedy = invoke("reply", str(tiny_run), "hi", "--rerank", "mmi", "--backward", str(backward))
    assert greedy.exit_code == 0 and "one candidate" in greedy.stderr
    wrong = invoke("reply", str(tiny_run), "hi", *mmi, "--backward", str(tiny_run))
    assert wrong.exit_code == 1 and "not a backward model" in wrong.stderr


def test_chat_answers_a_scripted_session(tiny_run):
    script = "hi\n/strategy beam beam_size=3\nhow are you?\n/reset\n/strategy wrong\n/quit\n"
    result = invoke("chat", str(tiny_run), input=script)
    assert result.exit_code == 0
    assert result.stdout.count("bot>") == 2
    assert "conversation reset" in result.stdout
    assert "usage: /strategy" in result.stdout


def test_eval_compares_a_run_with_the_baselines(tiny_run, corpus_dir, tmp_path):
    out = tmp_path / "eval.json"
    result = invoke(
        "eval", str(tiny_run), "--max-pairs", "150", "--resamples", "50", "--corpus",
        str(corpus_dir), "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "150 pairs in" in result.stdout and "difference [95% interval]" in result.stdout
    saved = json.loads(out.read_text())
    assert [run["name"] for run in saved["runs"]] == ["tiny", "random", "retrieval", "reference"]
    bad = invoke("eval", str(tiny_run), "--baselines", "oracle", "--corpus", str(corpus_dir))
    assert bad.exit_code == 1 and "unknown baseline 'oracle'" in bad.stderr


def test_training_refuses_to_overwrite_a_run(tiny_run, corpus_dir):
    result = invoke("train", "ce", "--out", str(tiny_run), "--corpus", str(corpus_dir))
    assert result.exit_code == 1
    assert "already holds a run" in result.stderr


def test_parse_strategy_validates_settings():
    config = parse_strategy(["beam", "beam_size=3", "length_penalty=0.5"], DecodeConfig())
    assert (config.strategy, config.beam_size, config.length_penalty) == ("beam", 3, 0.5)
    with pytest.raises(ValueError, match="unknown setting"):
        parse_strategy(["sample", "heat=2"], DecodeConfig())


@pytest.mark.parametrize("flag", ["--frequency-weighting", "--max-reply-count"])
def test_a_negative_training_option_is_refused_naming_its_flag(corpus_dir, tmp_path, flag):
    out = tmp_path / "run"
    result = invoke("train", "ce", "--corpus", str(corpus_dir), "--out", str(out), flag, "-1")
    assert result.exit_code != 0
    message = " ".join(result.output.replace("│", " ").split())  # unwrapped from rich's box
    assert f"Invalid value for '{flag}'" in message and "greater than or equal to 0" in message
    assert not out.exists()
