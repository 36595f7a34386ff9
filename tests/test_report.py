"""The episode report: numbers on a hand-made transcript, files written by finish_episode on real
chunked audio, the rebuild from disk, and the page rendered in headless Chromium."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from conftest import CHROMIUM, CHROMIUM_FLAGS
from typer.testing import CliRunner

from pipeline.cli.app import app
from pipeline.core.types import ChunkManifest, ChunkTranscript, ModelInfo, Segment, Transcript
from pipeline.episode import finish_episode, prepare_episode
from pipeline.quality.history import HISTORY_NAME, read_history
from pipeline.quality.report import (
    ReportInput,
    confusion_pairs,
    load_report_input,
    rebuild_report,
    render_html_report,
    render_markdown_report,
    taken_out_summary,
    worst_chunks,
)
from pipeline.quality.score import align_words, normalize_words, score_transcript
from pipeline.quality.signals import NO_SPEECH
from pipeline.sources.reference import read_reference

MODEL = ModelInfo(name="tiny.en", sha256="ab" * 32, source="test data", path=Path("t.pt"))

# Three 10 s chunks with known errors (as in test_score): brown→crown and "dog" deleted in
# chunk 0, "today" inserted in chunk 1, glitters→glitter in chunk 2.
REFERENCE = (
    "The quick brown fox jumps over the lazy dog.\n"
    "A stitch in time saves lives.\n"
    "All that glitters is not gold."
)


def _ct(index: int, start: float, end: float, *segments: Segment) -> ChunkTranscript:
    return ChunkTranscript(index, f"{index}" * 64, start, end, segments, MODEL, {}, 0.5)


def _synthetic() -> Transcript:
    chunks = [
        _ct(
            0,
            0.0,
            10.0,
            Segment(0.0, 4.0, "The quick crown fox", 0),
            Segment(4.0, 8.0, "jumps over the lazy", 0),
        ),
        _ct(
            1,
            10.0,
            20.0,
            Segment(10.0, 14.0, "A stitch in time", 1),
            Segment(17.0, 19.8, "saves lives today.", 1),
        ),
        _ct(2, 20.0, 30.0, Segment(20.5, 26.0, "All that glitter is not gold.", 2)),
    ]
    return Transcript(
        "synthetic",
        30.0,
        tuple(s for c in chunks for s in c.segments),
        tuple(chunks),
        {
            "code_version": "test",
            "models": [{"name": "tiny.en", "sha256": "ab" * 32, "source": "test"}],
        },
    )


def test_worst_chunks_and_confusions() -> None:
    t = _synthetic()
    score = score_transcript(t, REFERENCE)
    assert worst_chunks(score) == [0, 1, 2]  # 2 errors, then 1 (WER 1/6) before 1 (WER 1/6)
    assert worst_chunks(score, top=1) == [0]
    assert confusion_pairs(align_words(t, REFERENCE)) == [
        ("brown", "crown", 1),
        ("glitters", "glitter", 1),
    ]


def test_html_report_content() -> None:
    t = _synthetic()
    score = score_transcript(t, REFERENCE)
    page = render_html_report(ReportInput(t, score, None, REFERENCE, elapsed_s=3.0))
    assert f"{score.wer:.2%}" in page  # 19.05%
    assert "2 / 1 / 1" in page  # S / D / I
    assert "33.33% (2/6) / 13.33% (2/15)" in page  # near cuts / elsewhere, hand-computed
    assert "RTFx</td><td>10.0" in page
    assert 'id="timeline"' in page and "data:image/png;base64," in page
    assert '<span class="r">brown</span><span class="h">crown</span>' in page
    assert "WER per segment: 0.0–4.0 s: 25.00% (1 errors) · 4.0–8.0 s: 20.00% (1 errors)" in page
    assert "http://" not in page and "https://" not in page  # nothing to fetch


def test_markdown_report_content() -> None:
    t = _synthetic()
    md = render_markdown_report(ReportInput(t, score_transcript(t, REFERENCE), None, REFERENCE))
    assert "| WER | 19.05% |" in md
    assert "~~brown~~ **crown**" in md and "~~dog~~" in md and "**+today**" in md
    assert "| brown | crown | 1 |" in md
    assert "prefect" not in md.lower()


def test_reports_number_chunks_from_one_as_the_ui_does() -> None:
    # chunk index 0 (two errors, the worst) is "chunk 1" wherever a user reads it, as in the
    # task name "chunk 1/3"; the chunk index 2 (last) is chunk 3, and there is no chunk 0.
    t = _synthetic()
    data = ReportInput(t, score_transcript(t, REFERENCE), None, REFERENCE)
    md, page = render_markdown_report(data), render_html_report(data)
    assert "### chunk 1 · 0.0–10.0 s" in md and "### chunk 3 · 20.0–30.0 s" in md
    assert "<h3>chunk 1 · 0.0–10.0 s" in page and "<h3>chunk 3 · 20.0–30.0 s" in page
    assert "chunk 0 " not in md and "chunk 0 " not in page


# --- finish_episode on real chunked audio ---------------------------------------------------------


@pytest.fixture(scope="module")
def episode(tmp_path_factory, fixtures_dir) -> tuple[ChunkManifest, str]:
    """The 48 s fixture episode (2 s tone, then espeak speech) decoded and chunked."""
    audio_root = tmp_path_factory.mktemp("audio")
    manifest = prepare_episode(str(fixtures_dir / "episode.mp3"), "fixture", audio_root)
    return manifest, (fixtures_dir / "episode.txt").read_text(encoding="utf-8")


def _transcripts_from_reference(manifest: ChunkManifest, text: str) -> list[ChunkTranscript]:
    """Chunk transcripts that say the reference's words, spread over chunks by duration,
    with one word of the last chunk changed: exactly one substitution."""
    words = normalize_words(text)
    total = manifest.audio.duration_s
    out, taken = [], 0
    for k, c in enumerate(manifest.chunks):
        last = k == len(manifest.chunks) - 1
        n = len(words) - taken if last else round(len(words) * c.duration_s / total)
        mine = words[taken : taken + n]
        taken += n
        if last:
            mine = [*mine[:-1], "zebra"]
        seg = Segment(c.start_s, c.end_s, " ".join(mine), c.index, -0.2, 0.01)
        out.append(_ct(c.index, c.start_s, c.end_s, seg))
    return out


def test_finish_episode_writes_report_quality_and_history(episode, tmp_path) -> None:
    manifest, text = episode
    ref_file = tmp_path / "ref.txt"
    ref_file.write_text(text, encoding="utf-8")
    reference = read_reference(ref_file)
    cts = _transcripts_from_reference(manifest, text)
    out = tmp_path / "transcripts" / "fixture"
    transcript, score, files = finish_episode(manifest, cts, reference, out, elapsed_s=4.0)
    assert score is not None
    n = len(normalize_words(text))
    assert score.wer == pytest.approx(1 / n) and score.counts.substitutions == 1
    for name in ("report.html", "quality.json", "reference.txt", "run.json", "score.json"):
        assert files[name].exists(), name
    page = files["report.html"].read_text(encoding="utf-8")
    assert f"{score.wer:.2%}" in page
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries
    (record,) = read_history(out.parent / HISTORY_NAME)
    assert record.wer == score.wer and record.episode_id == "fixture"
    assert record.model == "tiny.en" and record.weights_sha256 == "ab" * 32
    assert [c.index for c in record.chunks] == [c.index for c in manifest.chunks]
    assert sum(c.errors for c in record.chunks) == 1
    assert json.loads(files["run.json"].read_text())["run_id"] == record.run_id

    # Rebuilt from the folder alone: the same numbers.
    again = load_report_input(out)
    assert again.score == score and again.reference_text == reference.text
    assert again.quality is not None and again.elapsed_s == 4.0
    files["report.html"].unlink()
    assert f"{score.wer:.2%}" in rebuild_report(out).read_text(encoding="utf-8")


def test_what_was_taken_out_is_reported(episode, tmp_path) -> None:
    # Words written over the fixture's opening 2 s tone (no speech under them) are not in the
    # transcript, but quality.json, the HTML report and the markdown (the Prefect artifact)
    # say what they were, where and why.
    manifest, text = episode
    cts = _transcripts_from_reference(manifest, text)
    invented = Segment(0.2, 1.6, "Thank you for watching.", 0)
    first = cts[0]
    cts[0] = ChunkTranscript(
        first.chunk_index, first.chunk_sha256, first.start_s, first.end_s,
        (invented, *first.segments), first.model, {"style": "clean"}, first.elapsed_s,
    )  # fmt: skip
    out = tmp_path / "fixture"
    transcript, _, files = finish_episode(manifest, cts, None, out)
    assert "watching" not in transcript.text
    data = load_report_input(out)
    assert data.quality is not None
    (taken,) = [x for sig in data.quality.signals for x in sig.taken_out]
    assert (taken.start_s, taken.end_s, taken.text, taken.reason) == (
        0.2, 1.6, "Thank you for watching.", NO_SPEECH
    )  # fmt: skip
    assert taken_out_summary(data.quality) == "1 segment with no speech under it"
    page = files["report.html"].read_text(encoding="utf-8")
    assert "<h2>Taken out of the transcript</h2>" in page
    assert "<td>1</td><td>0.2–1.6</td><td>no speech under it</td>" in page
    assert "Thank you for watching." in page
    md = render_markdown_report(data)
    assert "| 1 | 0.2–1.6 | no speech under it | Thank you for watching. |" in md
    assert "| taken out of the transcript | 1 segment with no speech under it |" in md

    # Nothing taken out: said once, and no table.
    _, _, files = finish_episode(
        manifest, _transcripts_from_reference(manifest, text), None, tmp_path / "clean"
    )
    page = files["report.html"].read_text(encoding="utf-8")
    assert "In all: nothing." in page and "<th>why</th>" not in page


def test_finish_episode_without_reference(episode, tmp_path) -> None:
    manifest, text = episode
    out = tmp_path / "fixture"
    (out).mkdir()
    (out / "reference.txt").write_text("stale", encoding="utf-8")
    _, score, files = finish_episode(
        manifest, _transcripts_from_reference(manifest, text), None, out
    )
    assert score is None and not (out / "reference.txt").exists()
    page = files["report.html"].read_text(encoding="utf-8")
    assert "no reference: reference-free signals only" in page
    assert "words per second" not in page  # the plot's label is in its PNG, not the text
    assert load_report_input(out).quality is not None
    assert read_history(tmp_path / HISTORY_NAME)[0].wer is None


def test_report_command_rebuilds_without_opening(episode, tmp_path) -> None:
    manifest, text = episode
    root = tmp_path / "transcripts"
    finish_episode(manifest, _transcripts_from_reference(manifest, text), None, root / "fixture")
    (root / "fixture" / "report.html").unlink()
    result = CliRunner().invoke(
        app, ["report", "fixture", "--transcripts-root", str(root), "--no-open"]
    )
    assert result.exit_code == 0, result.output
    assert (root / "fixture" / "report.html").exists()
    missing = CliRunner().invoke(app, ["report", "nope", "--transcripts-root", str(root)])
    assert missing.exit_code != 0


# --- the page in a real browser -------------------------------------------------------------------


@pytest.mark.e2e
def test_report_plot_renders_in_headless_chromium(tmp_path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no browser at {CHROMIUM}")
    import numpy as np
    from PIL import Image

    t = _synthetic()
    page_file = tmp_path / "report.html"
    page_file.write_text(
        render_html_report(ReportInput(t, score_transcript(t, REFERENCE), None, REFERENCE)),
        encoding="utf-8",
    )
    blocked: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})

            def guard(route) -> None:
                if route.request.url.startswith(("file:", "data:")):
                    route.continue_()
                else:  # a self-contained page asks for nothing else
                    blocked.append(route.request.url)
                    route.abort()

            page.route("**/*", guard)
            page.goto(page_file.as_uri())
            plot = page.locator("#timeline")
            plot.wait_for(state="visible")
            assert page.evaluate("document.getElementById('timeline').naturalWidth") > 500
            shot = plot.screenshot()
        finally:
            browser.close()
    assert blocked == []
    pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("L"), dtype=float)
    assert pixels.shape[1] > 500
    assert pixels.std() > 10  # bars, axes and labels: far from a blank (uniform) image
    assert (pixels < 128).mean() > 0.01  # and some of it is dark ink


def test_plotting_is_preloaded_on_a_thread() -> None:
    # In a fresh interpreter: nothing of matplotlib until asked, then Agg, off the caller's thread.
    import subprocess
    import sys

    code = (
        "import sys, threading\n"
        "from pipeline.quality.report import preload_plotting\n"
        "assert 'matplotlib' not in sys.modules\n"
        "t = preload_plotting()\n"
        "assert t is not threading.current_thread() and t.daemon\n"
        "t.join(60)\n"
        "import matplotlib\n"
        "assert 'matplotlib.pyplot' in sys.modules and matplotlib.get_backend().lower() == 'agg'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
