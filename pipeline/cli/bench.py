"""`podscribe bench`: openai-whisper ``transcribe()`` vs the podscribe pipeline, one process."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

err = Console(stderr=True)
out = Console()


def bench(
    source: Annotated[str, typer.Argument(help="Episode audio file (or http(s) URL).")],
    reference: Annotated[str, typer.Option(help="Reference text: a file or URL.")],
    model: Annotated[str, typer.Option(help="Whisper model name or .pt path.")] = "tiny.en",
    backend: Annotated[
        str, typer.Option(help="openai-whisper | faster-whisper (pipeline backend).")
    ] = "openai-whisper",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    batch_size: Annotated[
        int | None,
        typer.Option(help="Chunk windows per batch (default: 8 on CPU, from free GPU memory)."),
    ] = None,
    repeat: Annotated[
        int, typer.Option(help="Run everything this many times, interleaved; report medians.")
    ] = 1,
    deterministic_baseline: Annotated[
        bool,
        typer.Option(
            "--deterministic-baseline/--no-deterministic-baseline",
            help="Also time transcribe(temperature=0, condition_on_previous_text=False).",
        ),
    ] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object as the last line.")
    ] = False,
) -> None:
    """Time openai-whisper transcribe() and the podscribe pipeline on one episode; compare."""
    from pipeline.bench import run_bench

    result = run_bench(
        source,
        reference,
        model=model,
        backend=backend,
        device=device,
        batch_size=0 if batch_size is None else batch_size,
        repeat=repeat,
        deterministic_baseline=deterministic_baseline,
        log=lambda msg: err.print(msg, highlight=False),
    )
    summary = result.summary()
    table = Table(title=f"{source} · {model} · {result.device} · {result.threads} threads")
    columns = ("run", "wall s", "RTFx", "WER", "near / far cut", "RSS MB: start → peak", "stages s")
    for col in columns:
        table.add_column(col)
    for r in result.runs:
        stages = " ".join(f"{k} {v:.2f}" for k, v in r.stages.items())
        wer = "n/a" if r.wer is None else f"{r.wer:.2%}"
        rss = f"{r.start_rss_mb:.0f} → {r.peak_rss_mb:.0f}"
        cut = r.extra.get("near_cut")
        # Errors within ±2 s of the pipeline's cuts (the same positions for every run) / elsewhere.
        cuts = f"{cut['near']} / {cut['far']}" if cut else ""
        table.add_row(r.name, f"{r.wall_s:.2f}", f"{r.rtfx:.1f}", wer, cuts, rss, stages)
    (err if as_json else out).print(table)
    delta = summary["wer_delta"]
    (err if as_json else out).print(
        f"speedup {summary['speedup']:.2f}x (pipeline RTFx / {summary['baseline']} RTFx), "
        f"wer_delta {'n/a' if delta is None else f'{delta:+.4f}'}, "
        f"transcription stage RTFx {summary['transcribe_stage_rtfx']}, "
        f"process max RSS {summary['process_max_rss_mb']:.0f} MB · {result.machine}",
        highlight=False,
    )
    if as_json:
        print(json.dumps(summary))


def register(app: typer.Typer) -> None:
    """Add the bench command to the podscribe app."""
    app.command(name="bench")(bench)
