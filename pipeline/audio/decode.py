"""Decode an episode once to 16 kHz mono 16-bit WAV on disk, and read sample ranges back.

Modelled on openai/whisper ``whisper/audio.py``: ffmpeg does the decoding (it reads mp3, m4a,
ogg/opus, flac, wav and the audio track of video files), and its failures come back with ffmpeg's
own words. Unlike whisper, the decoded audio goes to a file, never into memory: a 3-hour episode is
about 350 MB of samples, and later stages read only the ranges they need.
"""

from __future__ import annotations

import errno
import shutil
import wave
from pathlib import Path

import ffmpeg
import numpy as np

from pipeline.core.errors import AudioError
from pipeline.core.store import atomic_path, read_json, sha256_file, write_json_atomic
from pipeline.core.types import SAMPLE_RATE, Chunk, DecodedAudio

CHANNELS = 1  # Whisper takes mono
SAMPLE_WIDTH = 2  # bytes per sample: signed 16-bit little-endian PCM
PCM_CODEC = "pcm_s16le"
INT16_SCALE = 32768.0  # int16 sample -> float in [-1, 1), as whisper does
_SNIFF_BYTES = 512  # bytes read from the head of a file to spot an HTML page posing as audio
_SIDECAR_SUFFIX = ".source.json"  # beside the WAV: which source it was decoded from
_OVER_LIMIT_S = 1.0  # decoded past the maximum duration, to tell "too long" from "at the limit"


def find_ffmpeg() -> str:
    """Path of an ffmpeg executable: the one on PATH, else the one imageio-ffmpeg ships."""
    on_path = shutil.which("ffmpeg")
    if on_path:
        return on_path
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as e:
        raise AudioError(
            f"ffmpeg not found on PATH and imageio-ffmpeg has none ({e}); "
            "install ffmpeg or `pip install imageio-ffmpeg`"
        ) from e


def decode_audio(
    source: Path,
    out_wav: Path,
    *,
    source_sha256: str | None = None,
    max_duration_s: float | None = None,
    label: str | None = None,
) -> DecodedAudio:
    """Decode ``source`` to a 16 kHz mono s16le WAV at ``out_wav`` (atomically), once.

    If ``out_wav`` already exists and its sidecar says it came from a source with the same
    sha256, it is reused without running ffmpeg. Raises AudioError (one line) when the input
    is missing, empty, not audio, holds no audio samples, or is longer than
    ``max_duration_s`` (ffmpeg stops just past the limit, so a file whose header lies about
    its length costs no more than the limit in time and disk). Errors name the input as
    ``label`` (the URL a file was downloaded from), else as its path.
    """
    name = label or str(source)
    if max_duration_s is not None and not max_duration_s > 0:
        raise AudioError(f"the maximum episode duration must be > 0 s, got {max_duration_s}")
    source, out_wav = Path(source), Path(out_wav)
    if not source.is_file():
        raise AudioError(f"cannot decode {name}: file not found")
    if source.stat().st_size == 0:
        raise AudioError(f"cannot decode {name}: file is empty (0 bytes)")
    if source.resolve() == out_wav.resolve():
        raise AudioError(f"cannot decode {source} onto itself: choose another output path")
    if source_sha256 is None:
        source_sha256 = sha256_file(source)

    reused = _reuse_decoded(out_wav, source_sha256)
    if reused is not None:
        _check_duration(name, reused.num_samples, max_duration_s)
        return reused

    with atomic_path(out_wav) as tmp:
        # A little past the limit, so that "longer than the limit" can be told from "at it".
        limit_s = None if max_duration_s is None else max_duration_s + _OVER_LIMIT_S
        _run_ffmpeg_decode(source, tmp, limit_s, name)
        num_samples = wav_num_samples(tmp)
        if num_samples == 0:
            raise AudioError(
                f"{name} contains no audio (decoded to 0 samples): "
                "check that the file plays, or download it again"
            )
        _check_duration(name, num_samples, max_duration_s)
        sha256 = sha256_file(tmp)
    decoded = DecodedAudio(
        path=out_wav, num_samples=num_samples, source_sha256=source_sha256, sha256=sha256
    )
    write_json_atomic(
        _sidecar(out_wav),
        {"source_sha256": source_sha256, "num_samples": num_samples, "sha256": sha256},
    )
    return decoded


def verify_decoded(audio: DecodedAudio, episode_id: str = "") -> DecodedAudio:
    """Check that a decoded WAV still holds what was decoded (its sha256); AudioError if not.

    Run before a stage reads the whole episode (diarization): a WAV changed or damaged since
    it was cut into chunks would give speaker turns that no longer match the chunks. A
    manifest of an older version records no sha256: nothing to check against.
    """
    if audio.sha256 is None:
        return audio
    where = f" of {episode_id}" if episode_id else ""
    try:
        actual = sha256_file(audio.path)
    except OSError as exc:
        raise AudioError(
            f"the decoded audio{where} cannot be read ({audio.path}): {exc}; "
            "Retry the run (or re-run the episode) to decode it again"
        ) from exc
    if actual != audio.sha256:
        raise AudioError(
            f"the decoded audio{where} changed since it was cut (sha256 mismatch): "
            f"{audio.path} has {actual[:12]}, the manifest says {audio.sha256[:12]}; "
            "Retry the run (or re-run the episode) to decode it again, or restore the file"
        )
    return audio


def _check_duration(name: str, num_samples: int, max_duration_s: float | None) -> None:
    if max_duration_s is not None and num_samples > max_duration_s * SAMPLE_RATE:
        raise AudioError(
            f"{name} is longer than the maximum episode duration of {max_duration_s:g} s: "
            "raise PODSCRIBE_MAX_EPISODE_S (or --max-duration-s) to transcribe it"
        )


def wav_num_samples(path: Path) -> int:
    """Number of samples in a 16 kHz mono s16 WAV, from its header (checks the format)."""
    with _open_wav(path) as w:
        return w.getnframes()


def read_wav_samples(
    path: Path, start_sample: int = 0, end_sample: int | None = None
) -> np.ndarray:
    """Samples [start_sample, end_sample) of a decoded WAV as float32 in [-1, 1) (Whisper's input).

    Only that range is read from disk.
    """
    pcm = read_wav_pcm(path, start_sample, end_sample)
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / INT16_SCALE


def read_chunk_samples(chunk: Chunk, context: bool = False) -> np.ndarray:
    """A chunk's own samples (float32, as ``read_wav_samples``), or with ``context`` the whole
    WAV: the chunk with the neighbouring audio it holds on either side."""
    if context:
        return read_wav_samples(chunk.path)
    return read_wav_samples(chunk.path, *chunk.own_span)


def read_wav_pcm(path: Path, start_sample: int = 0, end_sample: int | None = None) -> bytes:
    """Raw s16le bytes of samples [start_sample, end_sample) of a decoded WAV."""
    with _open_wav(path) as w:
        total = w.getnframes()
        end = total if end_sample is None else end_sample
        if not 0 <= start_sample <= end <= total:
            raise AudioError(
                f"sample range [{start_sample}, {end}) is outside {path} ({total} samples)"
            )
        w.setpos(start_sample)
        return w.readframes(end - start_sample)


def _run_ffmpeg_decode(
    source: Path, out_wav: Path, limit_s: float | None = None, name: str | None = None
) -> None:
    """Run ffmpeg: any input -> 16 kHz mono s16le WAV file, streamed to disk by ffmpeg itself.

    With ``limit_s``, ffmpeg stops after that many seconds of output."""
    limit = {} if limit_s is None else {"t": f"{limit_s:.3f}"}
    stream = ffmpeg.input(str(source)).output(
        str(out_wav),
        **limit,
        format="wav",  # the temp file's suffix says nothing about the format
        ac=CHANNELS,
        ar=SAMPLE_RATE,
        acodec=PCM_CODEC,
        map_metadata=-1,  # no tags: identical input gives an identical WAV
        fflags="+bitexact",
        flags="+bitexact",
    )
    try:
        # -loglevel error keeps stderr to the few lines that explain a failure; -nostdin stops
        # ffmpeg from waiting on a terminal when run under a scheduler.
        stream.global_args("-nostdin", "-hide_banner", "-loglevel", "error").run(
            cmd=find_ffmpeg(), capture_stdout=True, capture_stderr=True, overwrite_output=True
        )
    except ffmpeg.Error as e:
        stderr = e.stderr.decode("utf-8", errors="replace") if e.stderr else ""
        if "No space left on device" in stderr or "Disk quota exceeded" in stderr:
            # An OSError, so that atomic_path names the file being written (not its temp).
            raise OSError(errno.ENOSPC, "No space left on device") from e
        raise AudioError(_describe_failure(source, stderr, name or str(source))) from e


def _describe_failure(source: Path, stderr: str, name: str) -> str:
    """One line naming the input and the problem, from the meaningful last line of stderr."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    if any("does not contain any stream" in ln for ln in lines):
        return f"{name} contains no audio stream (a video without sound?): give a file with audio"
    if _looks_like_html(source):
        return (
            f"cannot decode {name}: it is an HTML/text page, not audio "
            "(a bad download? check the URL in a browser)"
        )
    reason = lines[-1] if lines else "ffmpeg failed without a message"
    # ffmpeg prefixes the reason with the input name: keep the reason only, we name the input.
    prefix = f"{source}: "
    if reason.startswith(prefix):
        reason = reason[len(prefix) :]
    return f"cannot decode {name}: {reason} — is it an audio file? check that it plays"


def _looks_like_html(path: Path) -> bool:
    """True when a file starts like a web page or other text (a common bad download)."""
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES).lstrip().lower()
    return head.startswith((b"<!doctype", b"<html", b"<?xml", b"{", b"<head", b"<body"))


def _open_wav(path: Path) -> wave.Wave_read:
    """Open a WAV and check it is what decode_audio writes (16 kHz, mono, 16-bit)."""
    try:
        w = wave.open(str(path), "rb")  # noqa: SIM115 - returned open, callers close it
    except (OSError, EOFError, wave.Error) as e:
        raise AudioError(f"cannot read WAV {path}: {e}") from e
    fmt = (w.getframerate(), w.getnchannels(), w.getsampwidth())
    if fmt != (SAMPLE_RATE, CHANNELS, SAMPLE_WIDTH):
        w.close()
        raise AudioError(
            f"{path} is {fmt[0]} Hz, {fmt[1]} channel(s), {8 * fmt[2]}-bit; "
            f"expected {SAMPLE_RATE} Hz mono 16-bit (decode it with decode_audio)"
        )
    return w


def _sidecar(out_wav: Path) -> Path:
    return out_wav.with_name(out_wav.name + _SIDECAR_SUFFIX)


def _reuse_decoded(out_wav: Path, source_sha256: str) -> DecodedAudio | None:
    """The existing decoded WAV, if its sidecar says it came from this source and it is whole."""
    sidecar = _sidecar(out_wav)
    if not (out_wav.is_file() and sidecar.is_file()):
        return None
    try:
        recorded = read_json(sidecar)
        num_samples = wav_num_samples(out_wav)
    except (OSError, ValueError, AudioError):
        return None  # unreadable leftovers: decode again
    if recorded.get("source_sha256") != source_sha256:
        return None
    if recorded.get("num_samples") != num_samples or num_samples == 0:
        return None
    # Hashed again even when the sidecar records it (~1 s for a 3-hour episode, far less
    # than decoding): a WAV damaged since is decoded again, so a Retry repairs it.
    sha256 = sha256_file(out_wav)
    if recorded.get("sha256", sha256) != sha256:
        return None
    return DecodedAudio(
        path=out_wav, num_samples=num_samples, source_sha256=source_sha256, sha256=sha256
    )
