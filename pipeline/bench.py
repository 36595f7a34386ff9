"""Benchmark: openai-whisper's own ``transcribe()`` against the podscribe pipeline, one process.

Both use the same loaded weights (loaded before any timing), the same thread count and the same
text normaliser (``pipeline.quality.score.score_texts``), so their ratio means something on a
shared, noisy machine where absolute times do not. The pipeline runs end to end as ``podscribe
transcribe`` does (decode, chunk, transcribe, quality checks and repair, score, write) into
fresh temporary folders, so nothing is reused from earlier runs.

Memory: each run's peak resident set is sampled every few milliseconds while it runs (the
process-wide ``ru_maxrss`` high-water mark cannot tell two runs in one process apart); the
process high-water mark is reported too.
"""

from __future__ import annotations

import os
import resource
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.asr.options import BACKENDS, TranscribeOptions
from pipeline.core.errors import OptionsError
from pipeline.core.types import chunk_number
from pipeline.sources.reference import Reference

BASELINE_DEFAULT = "whisper-transcribe-default"
BASELINE_DETERMINISTIC = "whisper-transcribe-t0-nocond"
BASELINE_FW_BATCHED = "faster-whisper-batched"
PIPELINE = "podscribe"
_RSS_SAMPLE_S = 0.005


@dataclass(frozen=True)
class BenchRun:
    """One timed transcription of the whole episode."""

    name: str
    description: str
    audio_s: float
    wall_s: float
    wer: float | None
    peak_rss_mb: float  # the process's RSS, sampled while this run ran: its peak
    start_rss_mb: float = 0.0  # ... and when the run started (weights, earlier runs' leftovers)
    stages: dict[str, float] = field(default_factory=dict)  # seconds per pipeline stage
    extra: dict[str, Any] = field(default_factory=dict)
    # A baseline's own segments (start, end, text), for its errors at the pipeline's cuts.
    anchor_segments: tuple[tuple[float, float, str], ...] = field(default=(), repr=False)
    # The pipeline's chunk transcripts, whose cuts those errors are counted at.
    chunks: tuple[Any, ...] = field(default=(), repr=False)

    @property
    def rtfx(self) -> float:
        """Seconds of audio per second of wall-clock time."""
        return self.audio_s / self.wall_s if self.wall_s > 0 else 0.0


@dataclass(frozen=True)
class BenchResult:
    """Baseline(s) and pipeline measured in one process, and how they compare."""

    source: str
    reference: str
    model: str
    backend: str
    device: str
    batch_size: int
    threads: int
    machine: str
    runs: tuple[BenchRun, ...]  # every repetition, in the order they ran
    process_max_rss_mb: float
    baseline: str = BASELINE_DEFAULT  # the run speedup and wer_delta compare against

    def median(self, name: str) -> BenchRun:
        """The repetition of ``name`` with the median wall time."""
        runs = sorted((r for r in self.runs if r.name == name), key=lambda r: r.wall_s)
        if not runs:
            raise KeyError(name)
        return runs[(len(runs) - 1) // 2]

    @property
    def speedup(self) -> float:
        """Pipeline RTFx / baseline (default ``transcribe()``) RTFx."""
        return self.median(PIPELINE).rtfx / self.median(self.baseline).rtfx

    @property
    def wer_delta(self) -> float | None:
        """Pipeline WER − baseline WER (positive: the pipeline makes more errors)."""
        p, b = self.median(PIPELINE).wer, self.median(self.baseline).wer
        return None if p is None or b is None else p - b

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary: the headline numbers plus every run."""
        names = list(dict.fromkeys(r.name for r in self.runs))
        med = {n: self.median(n) for n in names}
        return {
            "speedup": round(self.speedup, 3),
            "wer_delta": None if self.wer_delta is None else round(self.wer_delta, 5),
            "baseline": self.baseline,
            "baseline_rtfx": round(med[self.baseline].rtfx, 2),
            "baseline_wer": med[self.baseline].wer,
            "pipeline_rtfx": round(med[PIPELINE].rtfx, 2),
            "pipeline_wer": med[PIPELINE].wer,
            "transcribe_stage_rtfx": round(
                med[PIPELINE].audio_s / med[PIPELINE].stages["transcribe"], 2
            )
            if med[PIPELINE].stages.get("transcribe")
            else None,
            "source": self.source,
            "model": self.model,
            "backend": self.backend,
            "device": self.device,
            "batch_size": self.batch_size,
            "threads": self.threads,
            "machine": self.machine,
            "process_max_rss_mb": round(self.process_max_rss_mb, 1),
            "runs": [
                {
                    "name": r.name,
                    "description": r.description,
                    "wall_s": round(r.wall_s, 3),
                    "rtfx": round(r.rtfx, 2),
                    "wer": r.wer,
                    "peak_rss_mb": round(r.peak_rss_mb, 1),
                    "start_rss_mb": round(r.start_rss_mb, 1),
                    "stages": {k: round(v, 3) for k, v in r.stages.items()},
                    **r.extra,
                }
                for r in self.runs
            ],
        }


# --------------------------------------------------------------------------------------------
# Measuring


@dataclass
class RssSample:
    """The process's resident set size when sampling began, and its peak so far, in MB."""

    start_mb: float
    peak_mb: float


@contextmanager
def sampled_peak_rss() -> Iterator[RssSample]:
    """Sample this process's RSS in a thread while the block runs."""
    import psutil

    proc = psutil.Process()
    rss = proc.memory_info().rss / 2**20
    sample = RssSample(rss, rss)
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(_RSS_SAMPLE_S):
            sample.peak_mb = max(sample.peak_mb, proc.memory_info().rss / 2**20)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield sample
    finally:
        stop.set()
        thread.join()
        sample.peak_mb = max(sample.peak_mb, proc.memory_info().rss / 2**20)


def process_max_rss_mb() -> float:
    """The process's resident-set high-water mark (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine_description(device: str) -> str:
    """CPU count and model, and the GPU when one is used."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{os.cpu_count()} CPU cores ({cpu})"
    if device == "cuda":
        import torch

        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


# --------------------------------------------------------------------------------------------
# The runs


def _wer(text: str, reference: str) -> float | None:
    from pipeline.quality.score import score_texts

    return score_texts(text, reference).wer


def run_whisper_baseline(
    model: Any, source: str, reference: str, device: str, deterministic: bool = False
) -> BenchRun:
    """openai-whisper ``transcribe()`` on the whole file (it decodes the file itself)."""
    import torch
    import whisper

    kwargs: dict[str, Any] = {"fp16": device == "cuda", "verbose": None}
    if deterministic:
        kwargs |= {"temperature": 0.0, "condition_on_previous_text": False}
        name, desc = (
            BASELINE_DETERMINISTIC,
            ("openai-whisper transcribe(temperature=0, condition_on_previous_text=False)"),
        )
    else:
        name, desc = (
            BASELINE_DEFAULT,
            (
                "openai-whisper transcribe() with default options (greedy, temperature fallback "
                "0.2..1.0 seeded by torch.manual_seed(0), condition_on_previous_text=True)"
            ),
        )
    torch.manual_seed(0)
    with sampled_peak_rss() as rss:
        started = time.perf_counter()
        result = whisper.transcribe(model, source, **kwargs)
        wall = time.perf_counter() - started
    audio_s = float(result["segments"][-1]["end"]) if result["segments"] else 0.0
    # Kept (not JSON) so its errors can be counted at the pipeline's cut positions later.
    segments = [(float(s["start"]), float(s["end"]), str(s["text"])) for s in result["segments"]]
    return BenchRun(
        name,
        desc,
        audio_s,
        wall,
        _wer(result["text"], reference),
        rss.peak_mb,
        rss.start_mb,
        anchor_segments=tuple(segments),
    )


def run_pipeline(
    source: str,
    reference: Reference,
    options: TranscribeOptions,
    work_dir: Path,
    batch_size: int | None = None,
) -> BenchRun:
    """The podscribe pipeline end to end, into fresh folders under ``work_dir``."""
    from pipeline.episode import run_episode

    marks: dict[str, float] = {}

    def ready(_manifest: Any) -> None:
        marks["ready"] = time.perf_counter()

    def chunk_done(_ct: Any, _total: int) -> None:
        marks["transcribed"] = time.perf_counter()

    with sampled_peak_rss() as rss:
        started = time.perf_counter()
        result = run_episode(
            source,
            reference=reference,
            transcribe_options=options,
            audio_root=work_dir / "audio",
            transcripts_root=work_dir / "transcripts",
            on_chunk=chunk_done,
            on_chunks_ready=ready,
        )
        wall = time.perf_counter() - started
    ready_at = marks.get("ready", started)
    transcribed_at = marks.get("transcribed", ready_at)
    stages = {
        "prepare": ready_at - started,  # fetch/check, decode to WAV, chunk
        "transcribe": transcribed_at - ready_at,
        "finish": started + wall - transcribed_at,  # quality checks, repair, merge, score, write
    }
    quality = getattr(result, "quality", None)
    extra: dict[str, Any] = {"chunks": result.chunks}
    if result.score is not None and result.score.cuts is not None:
        extra["near_cut"] = _cut_summary(result.score.cuts)
    if quality is not None:  # chunks the quality checks sent back for a second transcription
        extra["retried_chunks"] = [chunk_number(r.chunk_index) for r in quality.repairs]
    batch_size = batch_size or options.batch_size
    desc = (
        f"podscribe pipeline ({options.model}, batch_size={batch_size}): decode, "
        "chunk, transcribe, quality checks + repair, score, write"
    )
    return BenchRun(
        PIPELINE,
        desc,
        result.duration_s,
        wall,
        _wer(result.transcript.text, reference.text),
        rss.peak_mb,
        rss.start_mb,
        stages,
        extra,
        chunks=tuple(result.transcript.chunks),
    )


def _cut_summary(cuts: Any) -> dict[str, Any]:
    """A CutErrorRates as JSON: rates and the counts behind them."""
    return {
        "near_rate": None if cuts.near_rate is None else round(cuts.near_rate, 4),
        "near": f"{cuts.near_errors}/{cuts.near_ref_words}",
        "far_rate": None if cuts.far_rate is None else round(cuts.far_rate, 4),
        "far": f"{cuts.far_errors}/{cuts.far_ref_words}",
        "window_s": cuts.window_s,
    }


def with_anchor_cut_rates(runs: list[BenchRun], reference: str) -> list[BenchRun]:
    """Each baseline run with its near-cut error rates counted at the cut positions of the
    pipeline run of the same repetition (the next pipeline run after it)."""
    import dataclasses

    from pipeline.quality.score import anchor_cut_error_rates

    out: list[BenchRun] = []
    for i, run in enumerate(runs):
        pipeline_run = next((r for r in runs[i:] if r.name == PIPELINE), None)
        if run.anchor_segments and pipeline_run is not None and pipeline_run.chunks:
            rates = anchor_cut_error_rates(run.anchor_segments, pipeline_run.chunks, reference)
            run = dataclasses.replace(run, extra=run.extra | {"near_cut": _cut_summary(rates)})
        out.append(run)
    return out


def _warm_up(model: Any, device: str) -> None:
    # First calls pay for kernel selection and allocation: not part of either run's cost.
    import torch
    import whisper

    mel = torch.zeros(1, model.dims.n_mels, 3000, device=device)
    options = whisper.DecodingOptions(language="en", fp16=device == "cuda", sample_len=8)
    whisper.decode(model, mel, options)
    # Word timing's DTW runs in numpy (numba's would compile for seconds on its first call):
    # installed here so that no run, the anchors' included, pays for a compile.
    from pipeline.asr.words import use_numpy_dtw

    use_numpy_dtw()


def run_bench(
    source: str,
    reference_source: str,
    *,
    model: str = "tiny.en",
    backend: str = "openai-whisper",
    device: str = "auto",
    batch_size: int = 8,
    repeat: int = 1,
    deterministic_baseline: bool = True,
    threads: int | None = None,
    log: Callable[[str], None] | None = None,
) -> BenchResult:
    """Run the baseline(s) and the pipeline ``repeat`` times, interleaved, in this process."""
    if backend not in BACKENDS:
        raise OptionsError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if repeat < 1:
        raise OptionsError(f"repeat must be at least 1, not {repeat}")
    if backend == "faster-whisper":
        return run_bench_ct2(
            source,
            reference_source,
            model=model,
            device=device,
            batch_size=batch_size,
            repeat=repeat,
            threads=threads,
            log=log,
        )
    import torch

    from pipeline.asr.loading import load_model
    from pipeline.asr.options import TranscribeOptions
    from pipeline.sources.reference import read_reference

    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    ref = read_reference(reference_source)
    options = TranscribeOptions(model=model, device=device, batch_size=batch_size)
    loaded = load_model(options)  # both runs use these weights, loaded before any timing
    from pipeline.asr.batch import resolve_batch_size

    effective_batch = resolve_batch_size(batch_size, loaded)
    _warm_up(loaded.model, loaded.device)
    say = log or (lambda _msg: None)
    runs: list[BenchRun] = []
    for i in range(repeat):
        say(f"[{i + 1}/{repeat}] baseline: openai-whisper transcribe() (default options)")
        runs.append(run_whisper_baseline(loaded.model, source, ref.text, loaded.device))
        if deterministic_baseline:
            say(f"[{i + 1}/{repeat}] baseline: transcribe(temperature=0, no conditioning)")
            runs.append(run_whisper_baseline(loaded.model, source, ref.text, loaded.device, True))
        say(f"[{i + 1}/{repeat}] podscribe pipeline (batch {effective_batch})")
        with tempfile.TemporaryDirectory(prefix="podscribe-bench-") as tmp:
            runs.append(run_pipeline(source, ref, options, Path(tmp), effective_batch))
    return _bench_result(
        with_anchor_cut_rates(runs, ref.text),
        source=source,
        reference=reference_source,
        model=model,
        backend=backend,
        device=loaded.device,
        batch_size=effective_batch,
        threads=threads,
        machine=machine_description(loaded.device),
    )


def _bench_result(runs: list[BenchRun], **fields: Any) -> BenchResult:
    """The result of a bench, every run given the decoded duration of the pipeline's run.

    A baseline's own audio length is its last segment's end, not the episode's length.
    """
    import dataclasses

    audio_s = next(r.audio_s for r in runs if r.name == PIPELINE)
    return BenchResult(
        runs=tuple(dataclasses.replace(r, audio_s=audio_s) for r in runs),
        process_max_rss_mb=process_max_rss_mb(),
        **fields,
    )


def run_fw_batched_baseline(fw: Any, source: str, reference: str, batch_size: int) -> BenchRun:
    """faster-whisper's own ``BatchedInferencePipeline`` (default VAD) on the whole file."""
    from faster_whisper import BatchedInferencePipeline

    pipe = BatchedInferencePipeline(fw)
    with sampled_peak_rss() as rss:
        started = time.perf_counter()
        segments, _info = pipe.transcribe(source, batch_size=batch_size)
        text = " ".join(s.text.strip() for s in segments)
        wall = time.perf_counter() - started
    desc = (
        f"faster-whisper BatchedInferencePipeline(model).transcribe(audio, "
        f"batch_size={batch_size}) with its default Silero VAD"
    )
    return BenchRun(
        BASELINE_FW_BATCHED, desc, 0.0, wall, _wer(text, reference), rss.peak_mb, rss.start_mb
    )


def run_bench_ct2(
    source: str,
    reference_source: str,
    *,
    model: str,
    device: str,
    batch_size: int,
    repeat: int,
    threads: int | None,
    log: Callable[[str], None] | None,
) -> BenchResult:
    """faster-whisper's batched pipeline (batch 8) vs podscribe on the faster-whisper backend."""
    from pipeline.asr.ct2 import load_ct2_model
    from pipeline.asr.options import TranscribeOptions
    from pipeline.sources.reference import read_reference

    threads = threads or os.cpu_count() or 1
    ref = read_reference(reference_source)
    loaded = load_ct2_model(model, device, threads)  # loaded before any timing
    effective_batch = batch_size or (8 if loaded.device == "cpu" else 32)
    options = TranscribeOptions(
        model=model, device=loaded.device, batch_size=effective_batch, backend="faster-whisper"
    )
    import numpy as np

    loaded.model.transcribe(np.zeros(16_000, dtype=np.float32), language="en")  # warm up
    say = log or (lambda _msg: None)
    runs: list[BenchRun] = []
    for i in range(repeat):
        say(f"[{i + 1}/{repeat}] baseline: faster-whisper BatchedInferencePipeline (batch 8)")
        runs.append(run_fw_batched_baseline(loaded.model, source, ref.text, 8))
        say(f"[{i + 1}/{repeat}] podscribe pipeline, faster-whisper backend")
        with tempfile.TemporaryDirectory(prefix="podscribe-bench-") as tmp:
            runs.append(run_pipeline(source, ref, options, Path(tmp), effective_batch))
    return _bench_result(
        runs,
        source=source,
        reference=reference_source,
        model=model,
        backend="faster-whisper",
        device=loaded.device,
        batch_size=effective_batch,
        threads=threads,
        machine=machine_description("cpu") + (", CUDA" if loaded.device == "cuda" else ""),
        baseline=BASELINE_FW_BATCHED,
    )
