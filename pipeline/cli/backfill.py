"""``podscribe backfill FEED``: a feed's queued episodes transcribed together (back-catalogue
mode, ``pipeline.backfill``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from pipeline.cli.feeds import DbOption
from pipeline.cli.options import (
    BACKFILL_FLAGS,
    AudioRootOption,
    ModelOption,
    StyleOption,
    TranscriptsRootOption,
    flags_named,
)
from pipeline.settings import fetch_limits, load_settings, retry_policy, weights_source

if TYPE_CHECKING:
    from pipeline.backfill import BackfillResult

out = Console()
err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add ``backfill`` to ``app``."""
    app.command("backfill")(backfill)


def backfill(
    feed: Annotated[
        str, typer.Argument(help="The feed: its URL (RSS or Atom), a local file, or its feed id.")
    ],
    limit: Annotated[
        int | None,
        typer.Option(min=1, help="Claim at most this many due episodes (default: all of them)."),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Chunk windows decoded together, across episodes "
            "(default: 8 on CPU, from free memory on a GPU).",
        ),
    ] = None,
    model: ModelOption = None,
    style: StyleOption = "clean",
    device: Annotated[
        str | None, typer.Option(help="auto | cpu | cuda (default: $PODSCRIBE_DEVICE or auto).")
    ] = None,
    max_chunk_s: Annotated[
        float,
        typer.Option(
            help="Longest chunk with context, seconds (≤ 30; at 30 a long episode's are longer)."
        ),
    ] = 30.0,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair/--no-repair",
            help="Transcribe chunks flagged by the quality checks once more (beam 5).",
        ),
    ] = True,
    db: DbOption = None,
    audio_root: AudioRootOption = None,
    transcripts_root: TranscriptsRootOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON summary as the last line.")
    ] = False,
) -> None:
    """Transcribe a feed's queued episodes (new, or failed with a retry due) together.

    Each episode is claimed from the catalog exactly once (a poll running at the same time
    takes the others), fetched and cut; then the chunks of all of them are transcribed in
    shared batches, and each episode is finished and recorded as `podscribe transcribe`
    does. An episode that fails is marked failed; the others go on."""
    from pipeline.asr.options import TranscribeOptions
    from pipeline.asr.weights import ensure_model
    from pipeline.audio.chunk import ChunkOptions
    from pipeline.backfill import BackfillOptions, backfill_feed, feed_url
    from pipeline.quality.repair import RepairPolicy
    from pipeline.sources.feed import fetch_feed

    settings = load_settings(
        model=model,
        device=device,
        db=db,
        audio_root=audio_root,
        transcripts_root=transcripts_root,
    )
    limits = fetch_limits(settings)
    ensure_model(settings.model, weights_source(settings))  # a standard name is downloaded once
    with flags_named(*BACKFILL_FLAGS):
        transcribe = TranscribeOptions(
            model=settings.model,
            device=settings.device,
            batch_size=0 if batch_size is None else batch_size,  # 0: automatic
            style=style,
        )
        chunk = ChunkOptions(
            max_chunk_s=max_chunk_s,
            min_chunk_s=min(ChunkOptions.min_chunk_s, max_chunk_s),
            search_s=min(ChunkOptions.search_s, max_chunk_s),
        )
    options = BackfillOptions(
        transcribe=transcribe,
        chunk=chunk,
        repair=RepairPolicy(enabled=repair),
        audio_root=settings.audio_root,
        transcripts_root=settings.transcripts_root,
        fetch_limits=limits,
        max_duration_s=settings.max_episode_s,
        retry=retry_policy(settings),
    )
    source = feed_url(settings.db, feed)
    result = backfill_feed(fetch_feed(source, limits=limits), settings.db, options, limit)
    table = Table("episode id", "title", "state", "WER", "chunks", "error")
    for o in result.outcomes:
        score = o.result.score if o.result else None
        table.add_row(
            o.episode_id,
            o.title,
            o.state,
            "n/a" if score is None else f"{score.wer:.2%}",
            str(o.result.chunks) if o.result else "",
            o.error or "",
        )
    err.print(table)
    err.print(
        f"backfill of {result.feed_id}: {len(result.done)} of {len(result.outcomes)} episodes "
        f"done, {result.audio_s:.0f} s of audio in {result.elapsed_s:.1f} s "
        f"({result.episodes_per_hour:.1f} episodes/hour; shared transcription "
        f"{result.transcribe_s:.1f} s for {result.chunks} chunks)"
        if result.outcomes
        else f"backfill of {result.feed_id}: no episode is due (all claimed, done or waiting "
        "for a retry; `podscribe episodes --feed ID` lists them)"
    )
    if as_json:
        print(json.dumps(summary(result)))


def summary(result: BackfillResult) -> dict[str, Any]:
    """The one-line JSON summary of ``podscribe backfill --json``."""
    return {
        "feed_id": result.feed_id,
        "episodes": [
            {
                "episode_id": o.episode_id,
                "state": o.state,
                "error": o.error,
                "wer": o.result.score.wer if o.result and o.result.score else None,
                "out": str(o.result.out_dir) if o.result else None,
            }
            for o in result.outcomes
        ],
        "done": len(result.done),
        "audio_s": round(result.audio_s, 3),
        "chunks": result.chunks,
        "transcribe_s": round(result.transcribe_s, 3),
        "elapsed_s": round(result.elapsed_s, 3),
        "episodes_per_hour": round(result.episodes_per_hour, 3),
    }
