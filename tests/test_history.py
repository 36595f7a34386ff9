"""Run history: records from real scores, concurrent appends, run lookup, chunk comparison, CLI."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli.app import app
from pipeline.core.types import ChunkTranscript, ModelInfo, Segment, Transcript
from pipeline.quality.history import (
    HistoryError,
    append_record,
    compare_runs,
    find_run,
    make_record,
    read_history,
    select_runs,
)
from pipeline.quality.score import score_transcript

REFERENCE = "red green blue gold. cat dog cow pig."


def _transcript(words_a: str, words_b: str, model: str = "tiny.en") -> Transcript:
    info = ModelInfo(model, "cd" * 32, "test", Path("m.pt"))
    chunks = (
        ChunkTranscript(0, "0" * 64, 0.0, 10.0, (Segment(0.0, 8.0, words_a, 0),), info, {}, 1.0),
        ChunkTranscript(1, "1" * 64, 10.0, 20.0, (Segment(10.0, 18.0, words_b, 1),), info, {}, 1.0),
    )
    prov = {
        "code_version": "0.1.0+gtest",
        "models": [{"name": model, "sha256": "cd" * 32}],
        "transcribe_options": {"beam_size": None},
        "chunk_options": {"max_chunk_s": 30},
    }
    return Transcript("ep", 20.0, tuple(s for c in chunks for s in c.segments), chunks, prov)


def _record(words_a: str, words_b: str, run_id: str, model: str = "tiny.en", feed=None):
    t = _transcript(words_a, words_b, model)
    return make_record(
        t,
        score_transcript(t, REFERENCE),
        run_id=run_id,
        feed=feed,
        elapsed_s=2.0,
        flags={1: ("low_confidence",), 0: ()},
    )


def test_record_holds_score_and_per_chunk_wer() -> None:
    r = _record("red green glue gold", "cat dog cow pig", "run-a")
    assert r.wer == pytest.approx(1 / 8)
    assert [(c.index, c.ref_words, c.errors, c.wer) for c in r.chunks] == [
        (0, 4, 1, 0.25),
        (1, 4, 0, 0.0),
    ]
    assert (r.model, r.weights_sha256, r.code_version) == ("tiny.en", "cd" * 32, "0.1.0+gtest")
    assert r.options["chunk"] == {"max_chunk_s": 30}
    assert r.flags == {"1": ["low_confidence"]}


def test_append_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    a = _record("red green glue gold", "cat dog cow pig", "20250101-000000-aaaaaa")
    b = _record("red green blue gold", "cat dig cow pig", "20250102-000000-bbbbbb")
    append_record(path, a)
    append_record(path, b)
    with open(path, "a", encoding="utf-8") as f:
        f.write("{not json\n")  # a hand-edited line is skipped, not fatal
    assert read_history(path) == [a, b]
    assert read_history(tmp_path / "none.jsonl") == []


def _append_many(path: str, worker: int, count: int) -> None:
    for k in range(count):
        append_record(
            Path(path),
            _record("red green blue gold", "cat dog cow pig", f"w{worker}-{k:03d}" + "x" * 2000),
        )


def test_concurrent_appends_never_tear_lines(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(path), w, 25)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 100
    assert all(json.loads(line)["schema"] == 1 for line in lines)
    assert len({json.loads(line)["run_id"] for line in lines}) == 100


def test_find_run_by_prefix(tmp_path: Path) -> None:
    runs = [
        _record("a", "b", "20250101-000000-aaaaaa"),
        _record("a", "b", "20250101-000000-abbbbb"),
    ]
    assert find_run(runs, "20250101-000000-ab").run_id == "20250101-000000-abbbbb"
    with pytest.raises(HistoryError, match="ambiguous"):
        find_run(runs, "20250101-000000-a")
    with pytest.raises(HistoryError, match="no run 'zzz'"):
        find_run(runs, "zzz")


def test_compare_lists_better_and_worse_chunks() -> None:
    a = _record("red green glue gold", "cat dog cow pig", "a")
    b = _record("red green blue gold", "cat dig cow big", "b")
    changes = compare_runs(a, b)
    assert [(c.index, c.verdict, c.errors_a, c.errors_b) for c in changes] == [
        (0, "better", 1, 0),
        (1, "worse", 0, 2),
    ]
    assert not any(c.moved for c in changes)


def test_select_runs_by_feed_and_episode() -> None:
    runs = [_record("a", "b", "2", feed="f1"), _record("a", "b", "1", feed="f2")]
    assert [r.run_id for r in select_runs(runs, feed="f1")] == ["2"]
    assert [r.run_id for r in select_runs(runs, episode="ep")] == ["1", "2"]
    assert select_runs(runs, episode="other") == []


def test_history_and_compare_commands(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    append_record(path, _record("red green glue gold", "cat dog cow pig", "20250101-000000-aaaaaa"))
    append_record(
        path,
        _record("red green blue gold", "cat dig cow pig", "20250102-000000-bbbbbb", model="base"),
    )
    runner = CliRunner(env={"COLUMNS": "200"})
    shown = runner.invoke(app, ["history", "--episode", "ep", "--transcripts-root", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert "tiny.en" in shown.output and "base" in shown.output and "12.50%" in shown.output
    as_json = runner.invoke(app, ["history", "--json", "--transcripts-root", str(tmp_path)])
    assert [r["model"] for r in json.loads(as_json.output)] == ["tiny.en", "base"]
    cmp = runner.invoke(
        app, ["compare", "20250101", "20250102", "--transcripts-root", str(tmp_path)]
    )
    assert cmp.exit_code == 0, cmp.output
    assert "better" in cmp.output and "worse" in cmp.output
    assert "1 better, 1 worse, 0 unchanged" in cmp.output
    unknown = runner.invoke(
        app, ["compare", "nope", "20250102", "--transcripts-root", str(tmp_path)]
    )
    assert unknown.exit_code != 0
