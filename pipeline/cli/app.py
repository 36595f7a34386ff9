"""The `podscribe` command line (typer). Every PodscribeError becomes one line on stderr."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from pipeline.cli import backfill as backfill_commands
from pipeline.cli import bench as bench_commands
from pipeline.cli import feeds as feed_commands
from pipeline.cli import quality as quality_commands
from pipeline.cli.options import (
    TRANSCRIBE_FLAGS,
    AudioRootOption,
    ModelOption,
    StyleOption,
    TranscriptsRootOption,
    flags_named,
)
from pipeline.core.errors import OptionsError, PodscribeError
from pipeline.core.types import ChunkManifest, ChunkTranscript, Transcript, chunk_number
from pipeline.episode import EpisodeResult
from pipeline.settings import load_settings

app = typer.Typer(
    help="Transcribe podcast episodes with Whisper and score them against a reference.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)
out = Console()

EXIT_ERROR = 2


def _fmt(value: float | None, pct: bool = True) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2%}" if pct else f"{value:.2f}"


@app.command()
def transcribe(
    source: Annotated[str, typer.Argument(help="Episode audio: a local file or an http(s) URL.")],
    reference: Annotated[
        str | None, typer.Option(help="Reference text to score against: a file or URL.")
    ] = None,
    model: ModelOption = None,
    device: Annotated[
        str | None,
        typer.Option(help="auto | cpu | cuda (default: $PODSCRIBE_DEVICE or auto)."),
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Output folder (default: transcripts/<id>).")
    ] = None,
    episode_id: Annotated[
        str | None, typer.Option(help="Episode id (default: from the source name).")
    ] = None,
    audio_root: AudioRootOption = None,
    transcripts_root: TranscriptsRootOption = None,
    max_chunk_s: Annotated[
        float,
        typer.Option(
            help="Longest chunk with context, seconds (≤ 30; at 30 a long episode's are longer)."
        ),
    ] = 30.0,
    long_chunk_s: Annotated[
        float,
        typer.Option(
            help="A long episode's chunks: whole 30 s windows up to this many seconds, while "
            "it still gives 8 chunks (max-chunk-s or less: never longer than max-chunk-s)."
        ),
    ] = 90.0,  # ChunkOptions.long_chunk_s (imported when the command runs)
    context_s: Annotated[
        float,
        typer.Option(help="Seconds of neighbouring audio heard on each side of a chunk (0: none)."),
    ] = 0.0,
    style: StyleOption = "clean",
    beam_size: Annotated[
        int | None, typer.Option(help="Beam search width (default: greedy).")
    ] = None,
    condition_chunks: Annotated[
        int,
        typer.Option(
            help="Prompt each chunk with the previous chunk's text, in runs of this many "
            "chunks decoded side by side (0: every chunk starts cold)."
        ),
    ] = 0,
    batch_size: Annotated[
        int | None,
        typer.Option(
            help="Chunk windows decoded together (1: one at a time) "
            "(default: 8 on CPU, from free memory on a GPU)."
        ),
    ] = None,
    backend: Annotated[
        str, typer.Option(help="openai-whisper | faster-whisper (CTranslate2, int8 on CPU).")
    ] = "openai-whisper",
    continue_in_window: Annotated[
        bool,
        typer.Option(
            "--continue-in-window/--no-continue-in-window",
            help="When Whisper stops a window early while the chunk's speech goes on, decode "
            "on in the same window; off: a new window from there, as transcribe() does.",
        ),
    ] = True,
    word_timestamps: Annotated[
        bool,
        typer.Option(
            "--word-timestamps/--no-word-timestamps",
            help="Time every word (transcript.json's words, the Podcasting 2.0 JSON per word).",
        ),
    ] = True,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair/--no-repair",
            help="Transcribe chunks flagged by the quality checks once more (beam 5).",
        ),
    ] = True,
    max_duration_s: Annotated[
        float | None,
        typer.Option(
            help="Refuse episodes longer than this many seconds "
            "(default: PODSCRIBE_MAX_EPISODE_S, 36000)."
        ),
    ] = None,
    rttm: Annotated[
        Path | None,
        typer.Option(help="Who spoke when (RTTM), to score diarization (DER) against."),
    ] = None,
    speakers: Annotated[
        str | None,
        typer.Option(
            help="Who speaks when: off | auto (count them) | N speakers "
            "(default: $PODSCRIBE_SPEAKERS or off)."
        ),
    ] = None,
    person: Annotated[
        list[str] | None,
        typer.Option(
            help='Someone who speaks, to name the speakers after: "Alice Smith:host" '
            "(role optional; repeat for each person). Used with --speakers, when the "
            "reference names no one.",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON summary as the last line.")
    ] = False,
) -> None:
    """Transcribe one episode into transcripts/<id>/ and score it when a reference is given.

    PODSCRIBE_* settings apply (see pipeline/settings.py); flags override them. Finished
    chunks are stored as they are done: the same command after a crash or kill reuses them
    and transcribes only the rest."""
    from pipeline.asr.options import TranscribeOptions
    from pipeline.asr.weights import ensure_model
    from pipeline.audio.chunk import ChunkOptions
    from pipeline.audio.diarize import parse_speakers
    from pipeline.episode import run_episode
    from pipeline.quality.repair import RepairPolicy
    from pipeline.settings import diarize_options, fetch_limits, weights_source
    from pipeline.sources.feed import parse_person
    from pipeline.sources.reference import read_reference
    from pipeline.sources.rttm import read_rttm

    if speakers is not None:
        parse_speakers(speakers)  # the flag's own error, before the settings name the variable
    persons = tuple(parse_person(p) for p in person or ())  # a bad --person fails at once
    settings = load_settings(
        speakers=speakers,
        model=model,
        device=device,
        audio_root=audio_root,
        transcripts_root=transcripts_root,
        max_episode_s=max_duration_s,
    )
    limits = fetch_limits(settings)
    diarizing = diarize_options(settings)
    if persons and diarizing is None:
        raise OptionsError("--person names the speakers the diarizer finds: add --speakers auto")
    ensure_model(settings.model, weights_source(settings))  # a standard name is downloaded once
    with flags_named(*TRANSCRIBE_FLAGS):
        options = TranscribeOptions(
            model=settings.model,
            device=settings.device,
            beam_size=beam_size,
            batch_size=0 if batch_size is None else batch_size,  # 0: automatic
            backend=backend,
            continue_in_window=continue_in_window,
            style=style,
            word_timestamps=word_timestamps,
            condition_chunks=condition_chunks,
        )
        # Shorter chunks search a shorter stretch for their cut (as the flows do): the defaults
        # (5 s minimum, 10 s search) do not fit in a chunk of less than 10 s.
        chunk_options = ChunkOptions(
            max_chunk_s=max_chunk_s,
            min_chunk_s=min(ChunkOptions.min_chunk_s, max_chunk_s),
            search_s=min(ChunkOptions.search_s, max_chunk_s),
            context_s=context_s,
            long_chunk_s=long_chunk_s,
        )
    # A bad reference fails before any work.
    ref = read_reference(reference, limits=limits) if reference else None
    spans = read_rttm(rttm) if rttm else None
    bar = ChunkProgress(disable=not err.is_terminal and as_json)
    with bar:
        result = run_episode(
            source,
            reference=ref,
            transcribe_options=options,
            chunk_options=chunk_options,
            episode_id=episode_id,
            audio_root=settings.audio_root,
            transcripts_root=settings.transcripts_root,
            out_dir=out_dir,
            on_chunk=bar.advance,
            on_chunks_ready=bar.start,
            repair_policy=RepairPolicy(enabled=repair),
            fetch_limits=limits,
            max_duration_s=settings.max_episode_s,
            rttm=spans,
            diarize_options=diarizing,
            persons=persons,
        )
    score = result.score
    err.print(
        f"[green]done[/green] {result.episode_id}: {result.duration_s:.1f} s of audio in "
        f"{result.elapsed_s:.1f} s (RTFx {result.rtfx:.1f}), {result.chunks} chunks"
        f"{f' ({result.chunks_reused} reused)' if result.chunks_reused else ''}, "
        f"WER {_fmt(score.wer if score else None)} → {result.out_dir}"
    )
    if as_json:
        print(json.dumps(episode_summary(result)))


class ChunkProgress:
    """A progress bar on stderr over an episode's chunks, with the running RTFx."""

    def __init__(self, disable: bool) -> None:
        self._bar = Progress(
            TextColumn("[bold]transcribing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("chunks · RTFx {task.fields[rtfx]}"),
            TimeElapsedColumn(),
            console=err,
            transient=False,
            disable=disable,
        )
        self._audio_s = 0.0
        self._t0 = time.perf_counter()
        self._task: TaskID | None = None

    def __enter__(self) -> ChunkProgress:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(None, None, None)

    def start(self, manifest: ChunkManifest) -> None:
        """The episode is cut: the bar counts its chunks from now."""
        self._t0 = time.perf_counter()
        self._task = self._bar.add_task("chunks", total=len(manifest.chunks), rtfx="–")

    def advance(self, chunk: ChunkTranscript, total: int) -> None:
        """One more chunk is transcribed."""
        self._audio_s += chunk.end_s - chunk.start_s
        rtfx = self._audio_s / max(time.perf_counter() - self._t0, 1e-9)
        if self._task is not None:
            self._bar.update(self._task, advance=1, rtfx=f"{rtfx:.1f}")


def episode_summary(result: EpisodeResult) -> dict[str, Any]:
    """The one-line JSON summary of ``podscribe transcribe --json``."""
    score, quality = result.score, result.quality
    return {
        "episode_id": result.episode_id,
        "wer": score.wer if score else None,
        "cer": score.cer if score else None,
        "duration_s": round(result.duration_s, 3),
        "elapsed_s": round(result.elapsed_s, 3),
        "rtfx": round(result.rtfx, 3),
        "chunks": result.chunks,
        "chunks_reused": result.chunks_reused,
        "out": str(result.out_dir),
        "model": result.transcript.chunks[0].model.name if result.transcript.chunks else None,
        "run_id": result.run_id,
        "flagged": {str(chunk_number(f.chunk_index)): list(f.names) for f in quality.flagged()}
        if quality
        else {},
        "repaired": [chunk_number(r.chunk_index) for r in quality.repairs if r.kept == "retry"]
        if quality
        else [],
        "report": str(result.out_dir / "report.html"),
        **speaker_summary(score, result.transcript),
    }


def speaker_summary(score: Any, transcript: Transcript | None = None) -> dict[str, Any]:
    """``speakers`` (how many the transcript names), ``cpwer`` and ``der``, each only where it
    applies: a transcript with speakers, a reference that names them, an RTTM."""
    out: dict[str, Any] = {}
    found = {s.speaker for s in transcript.segments} - {None} if transcript else set()
    if found:
        out["speakers"] = len(found)
    speakers = getattr(score, "speakers", None)
    diarization = getattr(score, "diarization", None)
    if speakers is not None:
        out.setdefault("speakers", speakers.hyp_speakers)  # a "Name: …" .txt hypothesis
        out["cpwer"] = speakers.cpwer
    if diarization is not None:
        out["der"] = diarization.der
    return out


@app.command()
def score(
    transcript: Annotated[
        Path, typer.Argument(help="A transcript.json from podscribe, or a plain .txt hypothesis.")
    ],
    reference: Annotated[str, typer.Argument(help="Reference text: a file or URL.")],
    rttm: Annotated[
        Path | None,
        typer.Option(help="Who spoke when (RTTM): adds DER for a transcript.json with speakers."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the score as JSON.")] = False,
) -> None:
    """Score a transcript against a reference (WER, CER, S/D/I; per chunk for transcript.json)."""
    from pipeline.core.transcript import load_transcript
    from pipeline.core.types import to_dict
    from pipeline.quality.score import score_texts, score_transcript
    from pipeline.quality.speakers import add_speaker_scores, cpwer
    from pipeline.settings import fetch_limits, load_settings
    from pipeline.sources.reference import read_reference
    from pipeline.sources.rttm import read_rttm

    ref = read_reference(reference, limits=fetch_limits(load_settings()))
    spans = read_rttm(rttm) if rttm else None
    if not transcript.exists():
        raise PodscribeError(f"transcript not found: {transcript}")
    hyp: Transcript | None = None
    if transcript.suffix == ".json":
        hyp = load_transcript(transcript)
        # the diarizer's turns, written beside the transcript: what DER is of
        found = transcript.parent / "speakers.rttm"
        turns = read_rttm(found) if spans and found.exists() else None
        result: Any = add_speaker_scores(
            score_transcript(hyp, ref.text), hyp, ref.turns, spans, turns=turns
        )
    else:
        if spans:
            raise PodscribeError(
                f"--rttm needs times: give a transcript.json, not {transcript.name}"
            )
        text_hyp = read_reference(str(transcript))  # a "Name: …" .txt keeps its speakers
        result = score_texts(text_hyp.text, ref.text)
        if ref.turns and text_hyp.turns:
            result = dataclasses.replace(result, speakers=cpwer(ref.turns, text_hyp.turns))
    if as_json:
        data = to_dict(result)
        data["speaker_score"] = data.pop("speakers")  # "speakers" is the count found
        print(json.dumps({**data, **speaker_summary(result, hyp)}))
        return
    table = Table(title=f"{transcript} vs {reference}")
    measures = ("wer", "cer", "mer", "wil")  # both Score and TextScore carry these
    for key in measures:
        table.add_column(key.upper())
    table.add_row(*(_fmt(getattr(result, k)) for k in measures))
    out.print(table)
    _print_speaker_scores(result)
    chunks = getattr(result, "chunks", ())  # per chunk only for a transcript.json
    if chunks:
        per = Table(title="per chunk")
        for col in ("chunk", "start", "end", "ref words", "S", "D", "I", "WER"):
            per.add_column(col)
        for c in chunks:
            n = c.counts
            per.add_row(
                str(chunk_number(c.chunk_index)),
                f"{c.start_s:.1f}",
                f"{c.end_s:.1f}",
                str(n.ref_words),
                str(n.substitutions),
                str(n.deletions),
                str(n.insertions),
                _fmt(c.wer),
            )
        out.print(per)


def _print_speaker_scores(result: Any) -> None:
    speakers, diarization = result.speakers, getattr(result, "diarization", None)
    if speakers is not None:
        out.print(
            f"cpWER {_fmt(speakers.cpwer)} ({speakers.hyp_speakers} speakers found, "
            f"{speakers.ref_speakers} in the reference)"
        )
    if diarization is not None:
        d = diarization
        out.print(
            f"DER {_fmt(d.der)}: miss {d.miss_s:.2f} s, false alarm {d.false_alarm_s:.2f} s, "
            f"confusion {d.confusion_s:.2f} s of {d.total_s:.2f} s (collar {d.collar_s:g} s)"
        )


models_app = typer.Typer(help="Whisper weights: list them, download standard ones.")
app.add_typer(models_app, name="models")


@models_app.callback(invoke_without_command=True)
def models(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the Whisper weights available offline and where each comes from."""
    if ctx.invoked_subcommand is not None:
        return
    from pipeline.asr.weights import list_models
    from pipeline.core.types import to_dict

    found = list_models()
    if as_json:
        print(json.dumps([to_dict(m) for m in found]))
        return
    table = Table(title="Whisper models")
    for col in ("name", "available", "source", "cached checkpoint", "note"):
        table.add_column(col)
    for m in found:
        table.add_row(
            m.name, "yes" if m.available else "no", str(m.source), str(m.cached_path or "–"), m.note
        )
    out.print(table)


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="A standard Whisper name: small.en, large-v3 ...")],
) -> None:
    """Download standard Whisper weights once (openai-whisper's URLs), verify, cache."""
    from pipeline.asr.weights import pull_model
    from pipeline.settings import load_settings, weights_source

    path = pull_model(name, weights_source(load_settings()))
    out.print(f"{name}: {path} (sha256 verified)")


def plain_demo(model: str, transcripts_root: Path, audio_root: Path) -> None:
    """Transcribe and score the bundled demo episodes directly (no feed, no Prefect)."""
    from pipeline.asr.options import TranscribeOptions
    from pipeline.demo import demo_episodes
    from pipeline.episode import run_episode
    from pipeline.sources.reference import read_reference

    options = TranscribeOptions(model=model)
    table = Table(title="podscribe demo")
    for col in ("episode", "audio", "chunks", "RTFx", "WER", "outputs"):
        table.add_column(col)
    for audio in demo_episodes():
        result = run_episode(
            str(audio),
            reference=read_reference(audio.with_suffix(".txt")),
            transcribe_options=options,
            episode_id=f"demo-{audio.stem}",
            audio_root=audio_root,
            transcripts_root=transcripts_root,
        )
        wer = result.score.wer if result.score else None
        table.add_row(
            result.episode_id,
            f"{result.duration_s:.1f} s",
            str(result.chunks),
            f"{result.rtfx:.1f}",
            _fmt(wer),
            str(result.out_dir),
        )
    out.print(table)
    out.print(f"Transcripts (.txt .srt .vtt .json) and score.json are in {transcripts_root}/.")


feed_commands.register(app)
quality_commands.register(app)
bench_commands.register(app)
backfill_commands.register(app)


def main(command: typer.Typer = app) -> None:
    """Entry point: run ``command``, turning podscribe's errors into one clean line.

    The installed ``podscribe`` is ``flows.cli:main``: this app plus the commands that need
    Prefect (``serve``, ``demo``)."""
    try:
        command()
    except PodscribeError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        err.print("[red]interrupted[/red]: outputs already written are kept")
        sys.exit(130)


if __name__ == "__main__":
    main()
