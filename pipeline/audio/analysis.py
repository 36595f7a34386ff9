"""What a stretch of 16 kHz mono audio holds: each 1 s window (0.5 s hop) is called
``silence``, ``noise``, ``music`` or ``speech`` (numpy only).

Music here means *spectrally stationary* sound: the normalised magnitude spectrum of a frame
hardly changes 30 ms later (tones, chords, held notes, hum; a tremolo changes loudness, not the
shape of the spectrum), while speech moves its formants and pitch all the time. Measured on
../shared/eval/dev-episode (290 s, several speakers) the window median of that similarity never
exceeded 0.93 on speech, and never fell below 0.97 on its jingle or on synthetic chords and
melodies, hence ``music_similarity`` 0.95. Noise (hiss, rain) is told apart by a flat spectrum.

The quality checks (``pipeline.quality.signals``) use it to find text over non-speech; the ASR
engines use ``speech_end_s`` to decide whether a chunk's speech goes on after a timestamp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.core.errors import OptionsError
from pipeline.core.types import SAMPLE_RATE

__all__ = [
    "CLASSES",
    "SoundThresholds",
    "WindowClasses",
    "classify_windows",
    "is_silent",
    "sounding_center",
    "sounding_frames",
    "speech_end_s",
]

FRAME_N = 1024  # samples per analysis frame (64 ms): resolves chord notes ~50 Hz apart
HOP_N = 160  # 10 ms between frames
FRAME_HOP_S = HOP_N / SAMPLE_RATE
LAG_FRAMES = 3  # spectra compared 30 ms apart: long enough for speech to move, not a held note
BAND_HZ = (80.0, 4000.0)  # where speech (and most music) puts its energy
WINDOW_S = 1.0  # a window is classified as a whole...
WINDOW_HOP_S = 0.5  # ...and each stands for this many seconds of the chunk
SILENCE_DBFS = -50.0  # frames quieter than this are silent whatever the chunk's level
DYNAMIC_RANGE_DB = 40.0  # and so are frames this far below the chunk's loud frames (p99)
ACTIVE_FRACTION = 0.25  # a window with fewer loud frames than this is silence
CLASSES = ("silence", "noise", "music", "speech")
# A chunk whose loudest sample is under this holds nothing to hear (digital silence, a faint
# noise floor): Whisper is not asked, because over silence it can only invent words ("you",
# "Thank you."). Speech peaks 40-60 dB higher; even a very quiet recording is far above it.
SILENT_PEAK_DBFS = -60.0
# A text span "lies over" a window's share when they overlap by more than this: Whisper's
# times come in 20 ms steps, and a span that grazes a share by a step or two is not over it.
OVERLAP_S = 0.05


@dataclass(frozen=True)
class SoundThresholds:
    """Where sound becomes music or noise; defaults tuned on the dev episode (module doc)."""

    # Window median spectral similarity at or above which sound counts as music (stationary).
    music_similarity: float = 0.95
    # Window median spectral flatness above which sound counts as noise, not speech.
    noise_flatness: float = 0.3

    def __post_init__(self) -> None:
        for name in ("music_similarity", "noise_flatness"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise OptionsError(f"{name} must be within [0, 1], not {value}")


@dataclass(frozen=True)
class WindowClasses:
    """The class of each 1 s audio window of a chunk (hop 0.5 s), in chunk order."""

    start_s: float  # episode time of the chunk's first sample
    classes: tuple[str, ...]  # one of CLASSES per window
    hop_s: float = WINDOW_HOP_S

    def center(self, k: int) -> float:
        """Episode time of window ``k``'s share of the chunk (the middle of its hop)."""
        return self.start_s + (k + 0.5) * self.hop_s

    def seconds(self, kind: str) -> float:
        """Seconds of the chunk in windows of this class."""
        return self.classes.count(kind) * self.hop_s

    def classes_over(self, start: float, end: float) -> tuple[str, ...]:
        """Classes of the windows whose share of the chunk (``center(k)`` ± hop/2) overlaps
        [start, end] (episode seconds) by more than OVERLAP_S; the nearest window's for a
        span shorter than that."""
        if not self.classes:
            return ()
        half = self.hop_s / 2
        over = tuple(
            c
            for k, c in enumerate(self.classes)
            if min(end, self.center(k) + half) - max(start, self.center(k) - half) > OVERLAP_S
        )
        if over:
            return over
        mid = (start + end) / 2
        nearest = min(range(len(self.classes)), key=lambda k: abs(self.center(k) - mid))
        return (self.classes[nearest],)

    def speech_over(self, start: float, end: float) -> bool:
        """Whether any window under [start, end] is speech: text there may have been said."""
        return "speech" in self.classes_over(start, end)


def _padded(samples: np.ndarray) -> np.ndarray:
    samples = samples.astype(np.float32, copy=False)
    if len(samples) < FRAME_N:
        samples = np.pad(samples, (0, FRAME_N - len(samples)))
    return samples


def _frames(samples: np.ndarray) -> np.ndarray:
    """Frames of FRAME_N samples every HOP_N (a strided view: no copy)."""
    return np.lib.stride_tricks.sliding_window_view(_padded(samples), FRAME_N)[::HOP_N]


# Frames start every HOP_N samples and span FRAME_N: both are whole numbers of these blocks.
_BLOCK_N = math.gcd(FRAME_N, HOP_N)


def _levels(samples: np.ndarray) -> np.ndarray:
    """Level (dBFS) of each of ``_frames(samples)``, from a running sum of squares taken over
    blocks of ``_BLOCK_N`` samples (a frame is a whole number of blocks; the per-sample sum
    over a 30 s chunk cost more than the rest of ``speech_end_s`` together)."""
    x = _padded(samples)
    blocks = x[: len(x) // _BLOCK_N * _BLOCK_N].reshape(-1, _BLOCK_N)
    energy = np.concatenate(
        ([0.0], np.cumsum(np.einsum("ij,ij->i", blocks, blocks), dtype=np.float64))
    )
    starts = np.arange(1 + (len(x) - FRAME_N) // HOP_N) * (HOP_N // _BLOCK_N)
    mean_square = np.maximum(energy[starts + FRAME_N // _BLOCK_N] - energy[starts], 0.0) / FRAME_N
    return 10 * np.log10(mean_square + 1e-12)


def _active(level: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    # Loudness is judged against the chunk itself, so a quiet recording still has speech.
    loud = np.percentile(level if reference is None or len(reference) == 0 else reference, 99)
    return (level > SILENCE_DBFS) & (level > loud - DYNAMIC_RANGE_DB)


def _spectral(samples: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Spectral flatness and similarity to the frame LAG_FRAMES back, of frames [lo, hi)."""
    first = max(0, lo - LAG_FRAMES)  # the frames the similarity of frame lo looks back to
    frames = _frames(samples)[first:hi]
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(FRAME_N).astype(np.float32), axis=1))
    freqs = np.fft.rfftfreq(FRAME_N, 1 / SAMPLE_RATE)
    band = spectrum[:, (freqs >= BAND_HZ[0]) & (freqs <= BAND_HZ[1])].astype(np.float64) + 1e-9
    power = band**2
    flatness = np.exp(np.log(power).mean(axis=1)) / power.mean(axis=1)
    unit = band / np.linalg.norm(band, axis=1, keepdims=True)
    similarity = np.ones(len(unit))  # the chunk's first LAG_FRAMES frames have nothing back
    if len(unit) > LAG_FRAMES:
        similarity[LAG_FRAMES:] = (unit[LAG_FRAMES:] * unit[:-LAG_FRAMES]).sum(axis=1)
    return flatness[lo - first :], similarity[lo - first :]


def _window_count(samples: np.ndarray) -> int:
    return max(1, math.ceil(len(samples) / (WINDOW_HOP_S * SAMPLE_RATE) - 1e-9))


def _window_frames(k: int, n_frames: int) -> tuple[int, int]:
    """Frames [lo, hi) of window k, centred on its hop: [k*hop - (width-hop)/2, +width)."""
    hop_frames = round(WINDOW_HOP_S * SAMPLE_RATE / HOP_N)
    width = round(WINDOW_S * SAMPLE_RATE / HOP_N)
    lo = max(0, k * hop_frames - (width - hop_frames) // 2)
    return lo, min(n_frames, lo + width)


def _silent(active: np.ndarray) -> bool:
    """Whether a window with these frames' activity is silence (no spectrum needed)."""
    return len(active) == 0 or bool(active.mean() < ACTIVE_FRACTION)


def _window_class(
    active: np.ndarray, flatness: np.ndarray, similarity: np.ndarray, t: SoundThresholds
) -> str:
    """The class of one window from its frames' values."""
    if _silent(active):
        return "silence"
    if np.median(similarity[active]) >= t.music_similarity:
        return "music"
    if np.median(flatness[active]) > t.noise_flatness:
        return "noise"
    return "speech"


def classify_windows(
    samples: np.ndarray, start_s: float = 0.0, thresholds: SoundThresholds | None = None
) -> WindowClasses:
    """Call each 1 s window of 16 kHz mono ``samples`` silence, noise, music or speech."""
    t = thresholds or SoundThresholds()
    if len(samples) == 0:
        return WindowClasses(start_s, ())
    level = _levels(samples)
    active = _active(level)
    windows = [_window_frames(k, len(level)) for k in range(_window_count(samples))]
    if all(_silent(active[lo:hi]) for lo, hi in windows):
        # No spectra needed (they are most of the cost): hours of silence stay cheap.
        return WindowClasses(start_s, ("silence",) * len(windows))
    flatness, similarity = _spectral(samples, 0, len(level))
    classes = [
        _window_class(active[lo:hi], flatness[lo:hi], similarity[lo:hi], t) for lo, hi in windows
    ]
    return WindowClasses(start_s, tuple(classes))


def sounding_frames(samples: np.ndarray, own: tuple[int, int] | None = None) -> np.ndarray:
    """Per 10 ms step of ``samples`` (frame ``i`` starts at ``i * FRAME_HOP_S``), whether its
    frame is loud enough to hold speech (by the same rule as ``classify_windows``).

    ``own``: the span of samples [first, end) that is the chunk's own, the rest being context
    heard around it (``Chunk.own_span``). Every frame is judged against the loudness of the
    frames that start in that span, so a loud sting in the context does not silence the
    chunk's quieter words."""
    level = _levels(samples)
    if own is None:
        return _active(level)
    return _active(level, level[math.ceil(own[0] / HOP_N) : math.ceil(own[1] / HOP_N)])


def sounding_center(active: np.ndarray, start_s: float, end_s: float) -> float | None:
    """The median time (seconds into the samples ``active`` came from) of the sounding frames
    whose centres lie in [start_s, end_s]; None when none does. A word Whisper stretched over a
    pause is centred here on where it is heard, not on the middle of the stretch."""
    centre = FRAME_N / 2 / SAMPLE_RATE
    lo = max(0, math.ceil((start_s - centre) / FRAME_HOP_S))
    hi = min(len(active), math.floor((end_s - centre) / FRAME_HOP_S) + 1)
    if hi <= lo:
        return None
    loud = np.flatnonzero(active[lo:hi])
    if len(loud) == 0:
        return None
    return float((lo + loud[len(loud) // 2]) * FRAME_HOP_S + centre)


def speech_end_s(samples: np.ndarray, thresholds: SoundThresholds | None = None) -> float:
    """Seconds into 16 kHz mono ``samples`` where their last speech ends: the end of the last
    window ``classify_windows`` calls speech (0.5 s steps); 0.0 when none is.

    Windows are classified from the end, each alone (the levels are the whole chunk's, as
    there), so a chunk that ends in speech costs the spectra of a few windows, not of all."""
    t = thresholds or SoundThresholds()
    if len(samples) == 0:
        return 0.0
    level = _levels(samples)
    active = _active(level)
    for k in reversed(range(_window_count(samples))):
        lo, hi = _window_frames(k, len(level))
        a = active[lo:hi]
        if _silent(a):
            continue
        flatness, similarity = _spectral(samples, lo, hi)
        if _window_class(a, flatness, similarity, t) == "speech":
            return min(len(samples) / SAMPLE_RATE, (k + 1) * WINDOW_HOP_S)
    return 0.0


def is_silent(samples: np.ndarray, peak_dbfs: float = SILENT_PEAK_DBFS) -> bool:
    """Whether float ``samples`` in [-1, 1) never rise above ``peak_dbfs`` (empty: silent)."""
    if len(samples) == 0:
        return True
    peak = float(np.max(np.abs(samples)))
    return peak <= 10 ** (peak_dbfs / 20)
