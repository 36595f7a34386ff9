"""podscribe bench: the comparison arithmetic, bad options, and the CLI end to end (--json)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.bench import (
    BASELINE_DEFAULT,
    PIPELINE,
    BenchResult,
    BenchRun,
    run_bench,
    sampled_peak_rss,
)
from pipeline.core.errors import OptionsError

REPO = Path(__file__).resolve().parents[1]


def _result(*runs: BenchRun) -> BenchResult:
    return BenchResult(
        "ep.mp3", "ref.txt", "tiny.en", "openai-whisper", "cpu", 8, 2, "test", runs, 0.0
    )


def test_speedup_and_wer_delta_use_the_median_repetition() -> None:
    result = _result(
        BenchRun(BASELINE_DEFAULT, "", 100.0, 10.0, 0.06, 1.0),
        BenchRun(PIPELINE, "", 100.0, 2.0, 0.062, 1.0, stages={"transcribe": 1.0}),
        BenchRun(BASELINE_DEFAULT, "", 100.0, 20.0, 0.06, 1.0),
        BenchRun(PIPELINE, "", 100.0, 4.0, 0.062, 1.0, stages={"transcribe": 2.0}),
        BenchRun(BASELINE_DEFAULT, "", 100.0, 12.0, 0.06, 1.0),
        BenchRun(PIPELINE, "", 100.0, 3.0, 0.062, 1.0, stages={"transcribe": 1.5}),
    )
    assert result.median(BASELINE_DEFAULT).wall_s == 12.0
    assert result.speedup == pytest.approx((100 / 3.0) / (100 / 12.0))
    assert result.wer_delta == pytest.approx(0.002)
    summary = result.summary()
    assert summary["speedup"] == pytest.approx(4.0)
    assert summary["transcribe_stage_rtfx"] == pytest.approx(100 / 1.5, rel=1e-3)
    assert len(summary["runs"]) == 6


def test_peak_rss_sees_an_allocation() -> None:
    with sampled_peak_rss() as rss:
        block = bytearray(80 * 2**20)
        block[::4096] = b"x" * len(block[::4096])  # touch every page
    assert rss.peak_mb >= rss.start_mb + 60
    del block


def test_unknown_backend_is_refused(fixtures_dir: Path) -> None:
    with pytest.raises(OptionsError, match="backend"):
        run_bench(
            str(fixtures_dir / "episode.mp3"), str(fixtures_dir / "episode.txt"), backend="nemo"
        )


@pytest.mark.slow
def test_bench_cli_json_on_the_fixture_episode(fixtures_dir: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "bench",
            str(fixtures_dir / "episode.mp3"),
            "--reference",
            str(fixtures_dir / "episode.txt"),
            "--json",
            "--no-deterministic-baseline",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    for key in (
        "speedup",
        "wer_delta",
        "baseline_rtfx",
        "pipeline_rtfx",
        "baseline_wer",
        "pipeline_wer",
        "transcribe_stage_rtfx",
        "machine",
        "runs",
    ):
        assert key in summary, key
    assert summary["speedup"] > 0
    assert 0 <= summary["pipeline_wer"] < 0.5
    names = [r["name"] for r in summary["runs"]]
    assert names == [BASELINE_DEFAULT, PIPELINE]
    for run in summary["runs"]:
        assert run["peak_rss_mb"] > 0 and run["wall_s"] > 0
    assert summary["wer_delta"] == pytest.approx(
        summary["pipeline_wer"] - summary["baseline_wer"], abs=1e-4
    )
