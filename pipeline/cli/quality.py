"""Quality commands of the `podscribe` CLI: report, history, compare (``register(app)``)."""

from __future__ import annotations

import json
import os
import webbrowser
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipeline.core.errors import PodscribeError
from pipeline.core.types import chunk_number
from pipeline.settings import load_settings

_out = Console()
_err = Console(stderr=True)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def _history_path(transcripts_root: Path | None) -> Path:
    from pipeline.quality.history import HISTORY_NAME

    return load_settings(transcripts_root=transcripts_root).transcripts_root / HISTORY_NAME


def _has_display() -> bool:
    # webbrowser would otherwise start a text browser (or hang) on a headless machine.
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) or (
        os.name == "nt" or os.uname().sysname == "Darwin"
    )


def report(
    episode: Annotated[
        str, typer.Argument(help="Episode id (a folder under --transcripts-root) or its folder.")
    ],
    transcripts_root: Annotated[
        Path | None,
        typer.Option(
            help="Where outputs are. (default: $PODSCRIBE_TRANSCRIPTS_ROOT, else transcripts)"
        ),
    ] = None,
    open_: Annotated[
        bool, typer.Option("--open/--no-open", help="Open the report in a browser.")
    ] = True,
) -> None:
    """Rebuild transcripts/<episode>/report.html from the episode's files and open it."""
    from pipeline.quality.report import rebuild_report

    root = load_settings(transcripts_root=transcripts_root).transcripts_root
    folder = Path(episode)
    if not (folder / "transcript.json").exists():
        folder = root / episode
    if not folder.is_dir():
        raise PodscribeError(
            f"no episode folder {folder}: run `podscribe transcribe` first, or pass the folder"
        )
    path = rebuild_report(folder)
    _out.print(f"report: {path}")
    if open_ and _has_display():
        webbrowser.open(path.resolve().as_uri())


def history(
    feed: Annotated[str | None, typer.Option(help="Only episodes of this feed.")] = None,
    episode: Annotated[str | None, typer.Option(help="Only this episode.")] = None,
    transcripts_root: Annotated[
        Path | None,
        typer.Option(
            help="Where history.jsonl is. (default: $PODSCRIBE_TRANSCRIPTS_ROOT, else transcripts)"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the records as JSON.")] = False,
) -> None:
    """WER per episode over runs and models, oldest run first."""
    from pipeline.quality.history import read_history, select_runs

    runs = select_runs(read_history(_history_path(transcripts_root)), feed, episode)
    if as_json:
        print(json.dumps([r.to_json() for r in runs]))
        return
    if not runs:
        _out.print("no runs recorded yet (they are kept after each `podscribe transcribe`)")
        return
    table = Table(title="podscribe history")
    for col in (
        "episode",
        "run",
        "time (UTC)",
        "model",
        "weights",
        "code",
        "WER",
        "CER",
        "flagged",
    ):
        table.add_column(col)
    previous: dict[str, float | None] = {}
    for r in runs:
        wer = _pct(r.wer)
        before = previous.get(r.episode_id)
        if r.wer is not None and before is not None and r.wer != before:
            wer += " ↓" if r.wer < before else " ↑"
        previous[r.episode_id] = r.wer
        table.add_row(
            r.episode_id,
            r.run_id,
            r.recorded_at.replace("T", " ").rstrip("Z"),
            r.model,
            r.weights_sha256[:12],
            r.code_version,
            wer,
            _pct(r.cer),
            ", ".join(sorted(r.flags, key=int)) or "–",
        )
    _out.print(table)


def compare(
    run_a: Annotated[str, typer.Argument(help="The earlier run id (a unique prefix will do).")],
    run_b: Annotated[str, typer.Argument(help="The later run id.")],
    transcripts_root: Annotated[
        Path | None,
        typer.Option(
            help="Where history.jsonl is. (default: $PODSCRIBE_TRANSCRIPTS_ROOT, else transcripts)"
        ),
    ] = None,
    show_all: Annotated[bool, typer.Option("--all", help="List unchanged chunks too.")] = False,
) -> None:
    """List the chunks that got better or worse from run A to run B."""
    from pipeline.quality.history import compare_runs, find_run, read_history

    records = read_history(_history_path(transcripts_root))
    a, b = find_run(records, run_a), find_run(records, run_b)
    if a.episode_id != b.episode_id:
        _err.print(
            f"[yellow]note[/yellow]: runs are of different episodes "
            f"({a.episode_id}, {b.episode_id}); chunks are matched by index"
        )
    changes = compare_runs(a, b)
    _out.print(
        f"{a.episode_id}: WER {_pct(a.wer)} ({a.model}, {a.run_id}) → "
        f"{_pct(b.wer)} ({b.model}, {b.run_id})"
    )
    table = Table()
    for col in ("chunk", "time (s)", "WER A", "WER B", "errors A→B", "verdict"):
        table.add_column(col)
    shown = 0
    for c in changes:
        if c.verdict == "same" and not show_all:
            continue
        shown += 1
        colour = {"better": "green", "worse": "red"}.get(c.verdict, "white")
        verdict = f"[{colour}]{c.verdict}[/{colour}]" + (" (bounds moved)" if c.moved else "")
        table.add_row(
            str(chunk_number(c.index)),
            f"{c.start_s:.1f}–{c.end_s:.1f}",
            _pct(c.wer_a),
            _pct(c.wer_b),
            f"{c.errors_a} → {c.errors_b}",
            verdict,
        )
    counts = {v: sum(c.verdict == v for c in changes) for v in ("better", "worse", "same")}
    if shown:
        _out.print(table)
    _out.print(f"{counts['better']} better, {counts['worse']} worse, {counts['same']} unchanged")


def register(app: typer.Typer) -> None:
    """Add the quality commands to the podscribe app."""
    app.command()(report)
    app.command()(history)
    app.command()(compare)
