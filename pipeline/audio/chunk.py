"""Cut a decoded episode into chunks of Whisper windows, each ending in a silence if there is one.

The episode WAV is walked chunk by chunk (at most one chunk's samples in memory), so a
3-hour episode costs no more memory than one chunk of it. Chunks tile the episode exactly:
chunk k covers samples [start, end) and the next starts at ``end``, which makes mapping chunk
times back to episode times a single addition (like faster-whisper's SpeechTimestampsMap, with
no gaps to account for).

How a cut is chosen, for a chunk starting at ``s``:

0. A chunk is at most ``max_chunk_s`` long (Whisper's 30 s window), or in a long episode
   several whole windows, up to ``long_chunk_s``, while the episode still gives
   ``min_chunks`` chunks (``ChunkOptions.chunk_s_for``); call that length L.
1. If the rest of the episode fits in L, it is the last chunk (cut "end").
2. Otherwise the cut lies in the search region [s + max(min_chunk_s, L - search_s), s + L],
   pulled back where possible so the remainder is not shorter than ``min_chunk_s``.
3. In that region ``detect_silences`` (pydub's rule, vectorised) finds silences (at least
   ``min_silence_ms`` below the threshold). The longest one wins, ties going to the later one;
   the cut is its middle (cut "silence"). Longest first because a long pause is far more likely
   a sentence or speaker boundary than a short one, and losing up to ``search_s`` of chunk
   length costs little.
4. With no silence, the cut is the middle of the quietest ``step_ms`` frame in the region, the
   later one on ties (cut "quietest").

Each chunk WAV may hold neighbouring audio that is heard but never transcribed into it:
``context_s`` on either side, and in a long episode the ``long_after_s`` that follow it, so
that a chunk's last window is full of real audio instead of padding.
"""

from __future__ import annotations

import dataclasses
import math
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.audio.decode import CHANNELS, SAMPLE_WIDTH, read_wav_pcm
from pipeline.core.errors import ChunkError, OptionsError
from pipeline.core.store import atomic_path, read_json, sha256_file, write_json_atomic
from pipeline.core.types import (
    SAMPLE_RATE,
    WHISPER_WINDOW_S,
    Chunk,
    ChunkManifest,
    DecodedAudio,
    manifest_from_dict,
    to_dict,
)

MAX_LONG_CHUNK_S = 600.0  # the longest long_chunk_s: a chunk is still a unit of retry work
MANIFEST_NAME = "manifest.json"
CHUNKS_DIRNAME = "chunks"
_WAV_HEADER_BYTES = 44  # what the wave module writes before the samples
_SILENCE_SEEK_MS = 10  # silence scan step: 10 ms edges are plenty for choosing a cut
_FULL_SCALE = 32768  # int16 full scale, the 0 dBFS of levels


@dataclass(frozen=True)
class ChunkOptions:
    """How an episode is cut into chunks; recorded in the manifest so a cut can be reproduced."""

    # Longest chunk, in seconds: Whisper's 30 s window, or less (a long episode's chunks may
    # be longer: long_chunk_s).
    max_chunk_s: float = WHISPER_WINDOW_S
    # A long episode is cut into longer chunks, of whole Whisper windows up to this many
    # seconds, as long as it still gives min_chunks of them (chunks are the unit of parallel
    # work: a CPU batch of 8, a flow's chunk tasks). Such a chunk is decoded window after
    # window, each starting where Whisper ended the one before, as transcribe() does: fewer
    # cuts in pauses, where these recordings are clipped, and windows full of real audio
    # instead of a chunk's end and padding. On longform-dev (17.7 min, tiny.en, repair on)
    # 30 s chunks gave 6.08% WER, 60 s 5.55%, 90 s 5.42%, 120 s 5.65% (transcribe(): 5.58%);
    # beam 5: 5.94%, 5.75%, 5.22% and 5.05% (BENCHMARKS.md, "Fifth pass"). Only with
    # max_chunk_s at a whole window (30 s); 30 here keeps every chunk at most 30 s.
    long_chunk_s: float = 90.0
    min_chunks: int = 8
    # Never cut earlier than this into a chunk: very short chunks give Whisper too little context.
    min_chunk_s: float = 5.0
    # How far back from max_chunk_s to look for a silence to cut in, in seconds.
    search_s: float = 10.0
    # Shortest pause that counts as a silence, in ms. Pauses of half a second or more mark
    # phrase and sentence ends; a cut in a shorter pause (between words of one phrase) takes
    # context from Whisper on both sides. Measured on the shared dev episode (tiny.en): 300 ms
    # gave 6.13% WER, 500 ms 5.56% with the same number of chunks. Where no pause this long
    # exists in the search region, pauses of half this length are tried before the quietest frame.
    min_silence_ms: int = 500
    # Silence threshold relative to the window's loudness (its RMS, in dBFS), in dB. Relative,
    # because podcasts are mastered anywhere from -14 to -30 dBFS and carry room tone or music
    # beds: a fixed threshold would find silence everywhere in a quiet show and nowhere in a
    # noisy one. 16 dB under the average is pydub's common rule of thumb, and holds for speech
    # whose pauses are 20-40 dB under it.
    silence_rel_db: float = -16.0
    # Absolute floor of that threshold, in dBFS: anything quieter is always silence. Without it a
    # window of digital silence (-inf dBFS) would give a threshold of -inf and find no silence.
    silence_floor_dbfs: float = -60.0
    # Frame length for the quietest-point fallback when there is no silence, in ms.
    step_ms: int = 20
    # Seconds of the neighbouring audio each chunk WAV also holds on either side (less at the
    # episode's ends). The recogniser hears the words across a cut in full, and keeps only the
    # words timed inside the chunk: a cut no longer ends a window on a clipped pause followed
    # by padding, where Whisper invents or garbles words. Chunk plus context fit in
    # max_chunk_s, so a chunk itself is at most max_chunk_s - 2 * context_s long.
    context_s: float = 0.0
    # Seconds of the audio that follows each chunk of a long episode (one cut into chunks of
    # several windows: chunk_s_for) its WAV also holds, as context_s does after the chunk but
    # without shortening it. The chunk's last window starts wherever Whisper ended the one
    # before and holds its last seconds (1.5-15 s on longform-dev); without this, the rest of
    # that window is padding, which is where tiny.en garbles and invents. The window hears the
    # speech that follows instead, as the windows of transcribe() do, and only the chunk's own
    # words are kept (by where they sound, as with context_s). A whole window, so the last
    # window is full (unless the episode ends first). On longform-dev (tiny.en): WER 5.42% ->
    # 5.25%, beam 5 5.22% -> 5.15% (15 s: 5.18% with beam 5); BENCHMARKS.md, "Sixth pass".
    # 0 turns it off.
    long_after_s: float = WHISPER_WINDOW_S

    @property
    def core_max_s(self) -> float:
        """The longest a chunk can be without its context (in an episode short enough that
        its chunks are at most max_chunk_s: ``core_max_s_for``)."""
        return self.max_chunk_s - 2 * self.context_s

    def chunk_s_for(self, duration_s: float) -> float:
        """The longest chunk, with its context, for an episode of ``duration_s``: as many whole
        Whisper windows (at most long_chunk_s) as still cut it into min_chunks chunks, when
        max_chunk_s is a whole window; max_chunk_s itself otherwise (shorter chunks asked
        for are what is cut, however long the episode)."""
        windows = min(
            int(duration_s // (self.min_chunks * WHISPER_WINDOW_S)),
            int(self.long_chunk_s // WHISPER_WINDOW_S),
        )
        if self.max_chunk_s < WHISPER_WINDOW_S or windows < 2:
            return self.max_chunk_s
        return windows * WHISPER_WINDOW_S

    def core_max_s_for(self, duration_s: float) -> float:
        """The longest a chunk of an episode of ``duration_s`` can be without its context."""
        return self.chunk_s_for(duration_s) - 2 * self.context_s

    def __post_init__(self) -> None:
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        """The options as plain JSON values (for manifests and provenance)."""
        return dataclasses.asdict(self)


def _validate(o: ChunkOptions) -> None:
    for f in dataclasses.fields(o):
        value = getattr(o, f.name)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise OptionsError(f"ChunkOptions.{f.name} must be a finite number, got {value!r}")
    if not 1.0 <= o.max_chunk_s <= WHISPER_WINDOW_S:  # a chunk holds at least 1 s of its own
        raise OptionsError(
            f"max_chunk_s must be between 1 and {WHISPER_WINDOW_S} s (Whisper's window), "
            f"got {o.max_chunk_s}"
        )
    if not 0 < o.long_chunk_s <= MAX_LONG_CHUNK_S:
        raise OptionsError(
            f"long_chunk_s must be > 0 and <= {MAX_LONG_CHUNK_S}, got {o.long_chunk_s}"
        )
    if not isinstance(o.min_chunks, int) or o.min_chunks < 1:
        raise OptionsError(f"min_chunks must be a whole number >= 1, got {o.min_chunks!r}")
    if o.context_s < 0 or o.core_max_s < 1.0:
        raise OptionsError(
            f"context_s must be >= 0 and leave max_chunk_s - 2 * context_s >= 1 s, "
            f"got context_s {o.context_s} with max_chunk_s {o.max_chunk_s}"
        )
    if not 0 <= o.long_after_s <= WHISPER_WINDOW_S:
        raise OptionsError(
            f"long_after_s must be between 0 and {WHISPER_WINDOW_S} (Whisper's window), "
            f"got {o.long_after_s}"
        )
    if not 0 <= o.min_chunk_s <= o.max_chunk_s:
        raise OptionsError(
            f"min_chunk_s must be between 0 and max_chunk_s ({o.max_chunk_s}), got {o.min_chunk_s}"
        )
    if not 0 < o.search_s <= o.max_chunk_s:
        raise OptionsError(
            f"search_s must be > 0 and <= max_chunk_s ({o.max_chunk_s}), got {o.search_s}"
        )
    if not 0 < o.min_silence_ms <= o.search_s * 1000:
        raise OptionsError(
            f"min_silence_ms must be > 0 and fit in search_s, got {o.min_silence_ms}"
        )
    if not 0 < o.step_ms <= o.search_s * 1000:
        raise OptionsError(f"step_ms must be > 0 and fit in search_s, got {o.step_ms}")
    if o.silence_rel_db > 0:
        raise OptionsError(f"silence_rel_db must be <= 0 dB, got {o.silence_rel_db}")
    if o.silence_floor_dbfs >= 0:
        raise OptionsError(f"silence_floor_dbfs must be < 0 dBFS, got {o.silence_floor_dbfs}")


def chunk_audio(
    decoded: DecodedAudio,
    out_dir: Path,
    episode_id: str,
    options: ChunkOptions = ChunkOptions(),  # frozen, so sharing the default is safe
) -> ChunkManifest:
    """Cut ``decoded`` into chunk WAVs under ``out_dir/chunks`` and write ``out_dir/manifest.json``.

    Returns the existing manifest untouched when it was made from the same audio with the same
    options and its chunk files are intact.
    """
    out_dir = Path(out_dir)
    if decoded.sample_rate != SAMPLE_RATE:
        raise ChunkError(
            f"{decoded.path} is {decoded.sample_rate} Hz; chunking needs {SAMPLE_RATE}"
        )
    manifest_path = out_dir / MANIFEST_NAME
    existing = _reusable_manifest(manifest_path, decoded, episode_id, options)
    if existing is not None:
        return existing

    bounds = plan_cuts(decoded, options)
    chunks_dir = out_dir / CHUNKS_DIRNAME
    before_n = after_n = int(options.context_s * SAMPLE_RATE)
    if options.chunk_s_for(decoded.duration_s) > WHISPER_WINDOW_S:  # chunks of several windows
        after_n = max(after_n, int(options.long_after_s * SAMPLE_RATE))
    chunks = tuple(
        _write_chunk(decoded, chunks_dir, i, (start, end, cut), (before_n, after_n))
        for i, (start, end, cut) in enumerate(bounds)
    )
    manifest = ChunkManifest(
        episode_id=episode_id, audio=decoded, chunks=chunks, options=options.to_dict()
    )
    write_json_atomic(manifest_path, manifest_to_dict(manifest))
    _remove_stale_chunks(chunks_dir, chunks)
    return manifest


def load_manifest(path: Path) -> ChunkManifest:
    """Read a manifest written by chunk_audio."""
    try:
        return manifest_from_dict(read_json(path))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ChunkError(f"cannot read chunk manifest {path}: {e}") from e


def verify_chunk(chunk: Chunk, episode_id: str = "") -> Chunk:
    """Check that a chunk WAV still holds what was cut (its sha256); ChunkError if not.

    Run before transcribing: a chunk rewritten or damaged since ``chunk_audio`` would give a
    transcript that no longer matches its recorded hash, and a cached result would lie.
    """
    where = f" of {episode_id}" if episode_id else ""
    try:
        actual = sha256_file(chunk.path)
    except OSError as exc:
        raise ChunkError(
            f"chunk {chunk.number}{where} cannot be read ({chunk.path}): {exc}; "
            "cut the episode again (re-run it)"
        ) from exc
    if actual != chunk.sha256:
        raise ChunkError(
            f"chunk {chunk.number}{where} changed since it was cut (sha256 mismatch): "
            f"{chunk.path} has {actual[:12]}, the manifest says {chunk.sha256[:12]}; "
            "cut the episode again (re-run it) or restore the file"
        )
    return chunk


# Where a chunk that starts at sample ``start`` may end, given the region [lo, hi] the rules
# allow: returns the end sample and why it was chosen ("silence", "quietest").
CutFinder = Callable[[int, int, int], tuple[int, str]]


def plan_cuts(decoded: DecodedAudio, options: ChunkOptions) -> list[tuple[int, int, str]]:
    """(start_sample, end_sample, cut) of each chunk, tiling [0, num_samples) exactly."""
    max_n = int(options.core_max_s_for(decoded.duration_s) * decoded.sample_rate)

    def cut_in_audio(start: int, lo: int, hi: int) -> tuple[int, str]:
        window = read_wav_pcm(decoded.path, start, min(start + max_n, decoded.num_samples))
        offset, cut = find_cut(window, lo - start, hi - start, options)
        return start + offset, cut

    return plan_tiling(decoded.num_samples, options, cut_in_audio, decoded.sample_rate)


def plan_tiling(
    total: int, options: ChunkOptions, find: CutFinder, rate: int = SAMPLE_RATE
) -> list[tuple[int, int, str]]:
    """(start, end, cut) of chunks tiling [0, total) samples in order, each at most
    ``chunk_s_for(episode) - 2 * context_s`` long (with its context, ``chunk_s_for``:
    ``max_chunk_s``, or longer in a long episode); ``find`` picks each cut inside the region
    the rules allow.

    Pure (no audio): whatever ``find`` answers is kept inside the region, so the tiling holds
    for any audio (tests drive it with made-up silence layouts).
    """
    # The chunk without its context; searching and minimum lengths shrink with it.
    max_n = max(1, int(options.core_max_s_for(total / rate) * rate))
    min_n = min(int(options.min_chunk_s * rate), max_n)
    search_n = min(int(options.search_s * rate), max_n)

    bounds: list[tuple[int, int, str]] = []
    start = 0
    while start < total:
        if total - start <= max_n:
            bounds.append((start, total, "end"))
            break
        lo = start + max(min_n, max_n - search_n, 1)  # a chunk is never empty
        hi = start + max_n
        if total - min_n >= lo:
            hi = min(hi, total - min_n)  # leave a last chunk of at least min_chunk_s
        end, cut = find(start, lo, hi)
        end = min(max(end, lo), hi)
        bounds.append((start, end, cut))
        start = end

    if len(bounds) >= 2:
        (p_start, _, _), (t_start, t_end, t_cut) = bounds[-2], bounds[-1]
        if t_end - t_start < min_n and t_end - p_start <= max_n:
            bounds[-2:] = [(p_start, t_end, t_cut)]  # a tiny tail joins the chunk before it
    return bounds


def find_cut(window: bytes, lo: int, hi: int, options: ChunkOptions) -> tuple[int, str]:
    """Where to end a chunk: a sample offset in [lo, hi] into ``window`` (s16le mono), and why.

    Returns ("silence") the middle of the longest silence in the region, or ("quietest") the
    middle of its quietest ``step_ms`` frame.
    """
    per_ms = SAMPLE_RATE // 1000
    samples = np.frombuffer(window, dtype="<i2")
    threshold = max(dbfs(samples) + options.silence_rel_db, options.silence_floor_dbfs)
    region = samples[lo:hi]
    # A clear pause first; a short one (fast talkers) is still better than the quietest frame.
    for min_len in (options.min_silence_ms, max(options.min_silence_ms // 2, 1)):
        silences = detect_silences(region, min_len, threshold, _SILENCE_SEEK_MS)
        if silences:
            s_ms, e_ms = pick_silence(silences)
            return min(lo + (s_ms + e_ms) * per_ms // 2, hi), "silence"
    return lo + _quietest_offset(region.tobytes(), options.step_ms * per_ms), "quietest"


def pick_silence(silences: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The silence to cut in (its middle): the longest, the later one on ties. A long pause is
    far more likely a sentence or speaker boundary than a short one."""
    return max(silences, key=lambda r: (r[1] - r[0], r[0]))


def _rms(sum_squares: np.ndarray | float, n: int) -> np.ndarray:
    # audioop.rms (what pydub uses): the square root of the mean square, truncated.
    return np.floor(np.sqrt(np.asarray(sum_squares, dtype=np.float64) / n))


def dbfs(samples: np.ndarray) -> float:
    """Level of int16 ``samples`` in dBFS, as pydub's ``AudioSegment.dBFS`` (silence: -inf)."""
    if len(samples) == 0:
        return -math.inf
    squares = np.square(samples.astype(np.int64)).sum()
    rms = float(_rms(squares, len(samples)))
    # math.log(x, 10), not log10: the last bit as pydub has it, so cuts stay where they were
    return 20 * math.log(rms / _FULL_SCALE, 10) if rms > 0 else -math.inf


def detect_silences(
    samples: np.ndarray, min_silence_ms: int, threshold_dbfs: float, seek_ms: int
) -> list[tuple[int, int]]:
    """pydub's ``detect_silence`` on int16 mono ``samples``, vectorised: the [start, end)
    millisecond ranges where every ``min_silence_ms`` window (tried every ``seek_ms``) is at
    or below ``threshold_dbfs``. Same answers (tested against pydub); pydub's loop of
    slices cost 60 ms per 10 s region, most of the time of cutting a long episode."""
    per_ms = SAMPLE_RATE // 1000
    seg_ms = round(1000 * (len(samples) / SAMPLE_RATE))
    if seg_ms < min_silence_ms:
        return []
    last = seg_ms - min_silence_ms
    starts = np.arange(0, last + 1, seek_ms)
    if last % seek_ms:
        starts = np.append(starts, last)  # the end of the region is searched too
    # pydub pads a slice that runs past the samples (a rounded length) with zeros
    padded = np.zeros(max(len(samples), seg_ms * per_ms), dtype=np.int64)
    padded[: len(samples)] = samples
    sums = np.concatenate(([0], np.cumsum(padded * padded)))
    n = min_silence_ms * per_ms
    window_sums = sums[(starts + min_silence_ms) * per_ms] - sums[starts * per_ms]
    silent = starts[_rms(window_sums, n) <= 10 ** (threshold_dbfs / 20) * _FULL_SCALE]
    if len(silent) == 0:
        return []
    ranges = []
    range_start = prev = int(silent[0])
    for i in map(int, silent[1:]):
        # windows that overlap (or follow each other) make one silence, as in pydub
        if i != prev + seek_ms and i > prev + min_silence_ms:
            ranges.append((range_start, prev + min_silence_ms))
            range_start = i
        prev = i
    ranges.append((range_start, prev + min_silence_ms))
    return ranges


def _quietest_offset(region: bytes, step_n: int) -> int:
    """Middle of the quietest ``step_n``-sample frame of ``region`` (the later one on ties)."""
    samples = np.frombuffer(region, dtype="<i2")
    n_frames = len(samples) // step_n
    if n_frames == 0:
        return len(samples)
    frames = samples[: n_frames * step_n].astype(np.float64).reshape(n_frames, step_n)
    energy = np.mean(frames * frames, axis=1)
    last_min = n_frames - 1 - int(np.argmin(energy[::-1]))
    return last_min * step_n + step_n // 2


def _write_chunk(
    decoded: DecodedAudio,
    chunks_dir: Path,
    index: int,
    bound: tuple[int, int, str],
    context_n: tuple[int, int],
) -> Chunk:
    """Write one chunk WAV: its samples with up to ``context_n`` (before, after) samples of
    the neighbouring audio on either side."""
    start, end, cut = bound
    path = chunks_dir / f"chunk-{index:04d}.wav"
    before = min(context_n[0], start)
    after = min(context_n[1], decoded.num_samples - end)
    pcm = read_wav_pcm(decoded.path, start - before, end + after)
    with atomic_path(path) as tmp, wave.open(str(tmp), "wb") as w:
        w.setnchannels(CHANNELS)
        w.setsampwidth(SAMPLE_WIDTH)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm)
    return Chunk(
        index=index,
        start_sample=start,
        end_sample=end,
        path=path,
        sha256=sha256_file(path),
        cut=cut,
        context_before=before,
        context_after=after,
    )


def manifest_to_dict(manifest: ChunkManifest) -> dict[str, Any]:
    """The manifest as manifest.json holds it."""
    data = to_dict(manifest)
    for chunk, entry in zip(manifest.chunks, data["chunks"], strict=True):
        # Seconds too, for people reading the file; the samples are what code uses.
        entry.update(start_s=chunk.start_s, end_s=chunk.end_s, duration_s=chunk.duration_s)
    return data


def _reusable_manifest(
    path: Path, decoded: DecodedAudio, episode_id: str, options: ChunkOptions
) -> ChunkManifest | None:
    """The manifest at ``path`` if it was made the same way and its chunk files are intact."""
    if not path.is_file():
        return None
    try:
        manifest = load_manifest(path)
    except ChunkError:
        return None  # unreadable: cut again and overwrite it
    same = (
        manifest.episode_id == episode_id
        and manifest.audio == decoded
        and manifest.options == options.to_dict()
    )
    if not same:
        return None
    for chunk in manifest.chunks:
        n = chunk.own_span[1] + chunk.context_after  # the WAV's samples, contexts included
        expected_size = _WAV_HEADER_BYTES + SAMPLE_WIDTH * n
        if not chunk.path.is_file() or chunk.path.stat().st_size != expected_size:
            return None
        if sha256_file(chunk.path) != chunk.sha256:
            return None
    return manifest


def _remove_stale_chunks(chunks_dir: Path, chunks: tuple[Chunk, ...]) -> None:
    """Delete chunk files left by an earlier cut that this manifest does not list."""
    keep = {c.path.name for c in chunks}
    for old in chunks_dir.glob("chunk-*.wav"):
        if old.name not in keep:
            old.unlink(missing_ok=True)
