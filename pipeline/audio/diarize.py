"""Who speaks when: speaker turns of a whole episode, offline, from weights shipped in wheels.

Four steps, each chosen for the hard cases of podcasts and calls:

1. **Speech** — silero-vad (its ONNX model is inside the ``silero-vad`` wheel) marks the speech
   regions; pauses shorter than ``min_silence_s`` stay inside a region.
2. **Embeddings** — Resemblyzer's speaker encoder (17 MB, inside the ``resemblyzer`` wheel) embeds
   ``window_s`` windows every ``step_s`` across each region. A region shorter than a window (an
   interjection: "Right!", "okay") gets one embedding of its own length.
3. **Clustering** — spectral clustering of the long windows' cosine affinities, pruned row by row
   and auto-tuned as in NME-SC (Park et al., 2019): the pruning that makes the eigengap clearest
   wins, and the largest eigengap gives the number of speakers (``speakers=None``), unless it is
   given. Short windows do not vote on the clusters (their embeddings are noisy); they are given
   to the nearest speaker afterwards, so an interjection is never a speaker of its own, but can
   belong to the other person of a conversation.
4. **Re-segmentation** — every 0.1 s frame of speech scores each speaker by the similarity of the
   windows over it to the speaker's centroid (a short window: to centroids of windows as
   short); a Viterbi pass with a price on every change of speaker inside speech (none across a
   pause, where turns change) picks the labels. At each change
   inside continuous speech, shorter sub-windows place the boundary more exactly. Turns shorter
   than ``min_turn_s`` are absorbed unless they are a region of their own.

Overlapped speech is not given two speakers: one speaker per frame, the one the embeddings
favour (overlap is a few per cent of a conversation's speech; guessing a second speaker costs
more false alarm than it saves miss).

Heavy imports (torch, onnxruntime, librosa) happen inside :func:`diarize_audio` only.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.core.errors import AudioError, OptionsError
from pipeline.core.store import sha256_file
from pipeline.core.types import SAMPLE_RATE, SpeakerSpan
from pipeline.core.version import code_version

if TYPE_CHECKING:
    import torch

__all__ = [
    "DiarizeOptions",
    "Diarization",
    "diarization_from_dict",
    "diarize_audio",
    "parse_speakers",
    "check_diarizer",
    "prepare_diarizer",
]

FRAME_S = 0.1  # resolution of the re-segmentation
MEL_HOP_S = 0.01  # Resemblyzer's mel frames (10 ms, 25 ms window, 40 bands)
NORM_DBFS = -30.0  # Resemblyzer was trained on audio levelled to this
MEL_BANDS = 40  # Resemblyzer's input
EMBED_DIM = 256  # its LSTM width and embedding size
LABEL_PREFIX = "SPEAKER_"
# The fewest neighbours a window keeps in the clustering graph. Fewer let a handful of windows
# (two seconds of one voice) form a group of their own: on a 36 s two-voice dialogue p = 2
# found 17 "speakers"; from 4 to 8 every dev set here comes out right (BENCHMARKS.md).
MIN_PRUNING = 5
# The fewest clustered windows (1.5 s every 0.75 s: about 4 s of voice) a speaker found by the
# eigengap must be able to have: the gap is looked for among the first n / this eigenvalues
# only. Far up the spectrum of a small graph the eigenvalues spread apart and their gaps mean
# nothing: a 37 s two-voice dialogue (35 windows) came out as 12 "speakers" at every pruning
# from 3 to 5 while its first gap said 2. Long episodes have hundreds of windows: no change.
MIN_SPEAKER_WINDOWS = 4


def parse_speakers(value: str | int | None) -> int | None | bool:
    """``--speakers``: "off" → False, "auto" → None (count them), "N" → N (1..50).

    OptionsError naming the value otherwise."""
    if value is None or value is False:
        return False
    text = str(value).strip().lower()
    if text == "off":
        return False
    if text == "auto":
        return None
    try:
        n = int(text)
    except ValueError:
        raise OptionsError(
            f"--speakers must be off, auto or a number of speakers (1-50), got {value!r}"
        ) from None
    if not 1 <= n <= 50:
        raise OptionsError(f"--speakers must be off, auto or 1-50 speakers, got {value!r}")
    return n


@dataclass(frozen=True)
class DiarizeOptions:
    """How an episode is diarized; tuned on ../shared/eval/conversation-dev (BENCHMARKS.md)."""

    speakers: int | None = None  # how many there are; None: found from the eigengap
    max_speakers: int = 20  # the most ``auto`` may find
    device: str = "auto"  # auto | cpu | cuda: where the speaker encoder runs
    # --- speech ---
    vad_threshold: float = 0.5  # silero speech probability above which a frame is speech
    min_silence_s: float = 0.25  # shorter pauses stay inside a speech region
    min_speech_s: float = 0.2  # shorter speech regions are dropped (clicks)
    # --- embeddings ---
    window_s: float = 1.5  # a long window: enough voice for a stable embedding
    step_s: float = 0.75  # between long windows (1.0 s already split a speaker in two)
    min_window_s: float = 0.4  # a region shorter than this is embedded with this much audio
    sub_window_s: float = 0.75  # the shorter windows that place a boundary inside speech
    # --- clustering and re-segmentation ---
    switch_penalty: float = 0.6  # price of a change of speaker inside speech (similarity units)
    # Price of a change across a pause: none. Turns change at pauses, and a short answer
    # ("Right.") between two turns of the other voice must stand on its own evidence: at 0.15
    # it went to the other voice (the dialogue fixture); on conversation-dev 0 to 0.3 tie.
    pause_penalty: float = 0.0
    min_turn_s: float = 0.5  # shorter turns inside speech are absorbed by their neighbours

    def __post_init__(self) -> None:
        if self.speakers is not None and not 1 <= self.speakers <= 50:
            raise OptionsError(f"speakers must be 1-50 or None (auto), got {self.speakers}")
        if not 2 <= self.max_speakers <= 50:
            raise OptionsError(f"max_speakers must be 2-50, got {self.max_speakers}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise OptionsError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if not 0 < self.vad_threshold < 1:
            raise OptionsError(f"vad_threshold must be in (0, 1), got {self.vad_threshold}")
        if not 0.2 <= self.min_window_s <= self.sub_window_s <= self.window_s <= 5:
            raise OptionsError(
                "windows must satisfy 0.2 <= min_window_s <= sub_window_s <= window_s <= 5 s, got "
                f"{self.min_window_s}, {self.sub_window_s}, {self.window_s}"
            )
        if not 0 < self.step_s <= self.window_s:
            raise OptionsError(f"step_s must be in (0, window_s], got {self.step_s}")
        for name in ("min_silence_s", "min_speech_s", "switch_penalty", "pause_penalty"):
            if getattr(self, name) < 0:
                raise OptionsError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.min_turn_s < 0:
            raise OptionsError(f"min_turn_s must be >= 0, got {self.min_turn_s}")


@dataclass(frozen=True)
class Diarization:
    """Speaker turns of one episode (episode seconds, labels ``SPEAKER_1…``) and how they were
    made: the models with their hashes, the options and the code version."""

    episode_id: str
    duration_s: float
    turns: tuple[SpeakerSpan, ...]
    provenance: dict[str, Any]
    elapsed_s: float

    @property
    def speakers(self) -> tuple[str, ...]:
        return tuple(sorted({t.speaker for t in self.turns}, key=_label_order))


def _label_order(label: str) -> tuple[int, str]:
    tail = label.removeprefix(LABEL_PREFIX)
    return (int(tail), "") if tail.isdigit() else (10**9, label)


def diarization_from_dict(d: dict[str, Any]) -> Diarization:
    return Diarization(
        episode_id=d["episode_id"],
        duration_s=d["duration_s"],
        turns=tuple(SpeakerSpan(t["speaker"], t["start"], t["end"]) for t in d["turns"]),
        provenance=dict(d["provenance"]),
        elapsed_s=d["elapsed_s"],
    )


# --- audio and models -------------------------------------------------------------------------


def _read_wav(path: Path) -> np.ndarray:
    try:
        with wave.open(str(path), "rb") as f:
            if f.getframerate() != SAMPLE_RATE or f.getnchannels() != 1 or f.getsampwidth() != 2:
                raise AudioError(f"{path}: diarization needs 16 kHz mono 16-bit WAV (decode first)")
            data = f.readframes(f.getnframes())
    except (OSError, wave.Error, EOFError) as exc:
        raise AudioError(f"cannot read {path} for diarization: {exc}") from None
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def _load_vad(path: Path) -> Any:
    import torch

    # silero_vad sets torch to one thread at import: keep the process's setting (Whisper's).
    threads = torch.get_num_threads()
    try:
        from silero_vad import sequence_vad
    finally:
        torch.set_num_threads(threads)
    # The "sequence" model: one ONNX call per 16 s block instead of one per 32 ms frame.
    return sequence_vad.SileroVADSequence(str(path)), sequence_vad


def _model_files() -> dict[str, Path]:
    import importlib.util

    files = {}
    for package, name in (
        ("silero_vad", "data/silero_vad_16k_sequence.onnx"),
        ("resemblyzer", "pretrained.pt"),
    ):
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise AudioError(
                f"speaker diarization needs the {package} package: "
                "pip install 'podscribe[speakers]'"
            )
        files[package] = Path(spec.origin).parent / name
    return files


@functools.cache
def _file_sha256(path: Path) -> str:
    return sha256_file(path)  # model files in an installed wheel do not change while we run


def _models_provenance(files: dict[str, Path]) -> list[dict[str, str]]:
    from importlib.metadata import version

    return [
        {
            "name": package,
            "version": version(package.replace("_", "-")),
            "file": path.name,
            "sha256": _file_sha256(path),
        }
        for package, path in files.items()
    ]


def _encoder_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise OptionsError("diarization device cuda asked for, but torch sees no GPU: use cpu")
    return device


# --- step 1: speech regions -------------------------------------------------------------------


def _speech_regions(
    audio: np.ndarray, options: DiarizeOptions, model_path: Path
) -> list[tuple[float, float]]:
    model, sequence_vad = _load_vad(model_path)
    stamps = sequence_vad.get_speech_timestamps_sequence(
        audio,
        model,
        threshold=options.vad_threshold,
        sampling_rate=SAMPLE_RATE,
        min_speech_duration_ms=int(options.min_speech_s * 1000),
        min_silence_duration_ms=int(options.min_silence_s * 1000),
        speech_pad_ms=30,
    )
    return [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in stamps]


# --- step 2: embeddings -----------------------------------------------------------------------


N_FFT = 400  # 25 ms
HOP = 160  # 10 ms


def _hz_to_mel(f: float | np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    mel = f / (200.0 / 3)
    log_part = f >= 1000.0
    return np.where(
        log_part, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27), mel
    )


def _mel_to_hz(m: float | np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27) * (m - 15.0)), m * (200.0 / 3))


def _mel_filters() -> np.ndarray:
    """The (40, 201) Slaney-normalised triangular filters of librosa.filters.mel(16000, 400, 40)."""
    fft_hz = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    mel_hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), MEL_BANDS + 2))
    widths = np.diff(mel_hz)
    ramps = mel_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    return weights * (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]


def mel_frames(audio: np.ndarray) -> np.ndarray:
    """(frames, 40) power mel spectrogram as Resemblyzer computes it (librosa's
    melspectrogram: centred 25 ms Hann frames every 10 ms, zero padded), numpy only."""
    padded = np.pad(audio.astype(np.float32), N_FFT // 2)
    n = 1 + (len(padded) - N_FFT) // HOP
    window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)  # periodic, as scipy's "hann"
    filters = _mel_filters().astype(np.float32)
    out = np.empty((n, MEL_BANDS), dtype=np.float32)
    block = 4096  # frames at a time: bounded memory on long episodes
    for k in range(0, n, block):
        idx = np.arange(k, min(n, k + block))[:, None] * HOP + np.arange(N_FFT)[None, :]
        spec = np.abs(np.fft.rfft(padded[idx] * window, axis=1)) ** 2
        out[k : k + len(idx)] = spec @ filters.T
    return out


@dataclass(frozen=True)
class _Windows:
    starts: np.ndarray  # seconds
    ends: np.ndarray
    region: np.ndarray  # index of the speech region each window lies in
    long: np.ndarray  # bool: a full-length window (votes in the clustering)
    emb: np.ndarray  # (n, 256), unit length


class _Encoder:
    """Resemblyzer's speaker encoder over the mel frames of the whole episode, computed once.

    The network (3 LSTM layers, a linear layer, ReLU, unit length) is rebuilt here around the
    wheel's ``pretrained.pt``: importing the ``resemblyzer`` package would import webrtcvad,
    which needs ``pkg_resources`` (setuptools) at run time, for a VAD we do not use.
    """

    def __init__(
        self, audio: np.ndarray, regions: list[tuple[float, float]], weights: Path, device: str
    ) -> None:
        import torch

        speech = np.concatenate(
            [audio[int(s * SAMPLE_RATE) : int(e * SAMPLE_RATE)] for s, e in regions]
        )
        speech_rms = float(np.sqrt(np.mean(speech**2))) or 1.0
        gain = 10 ** (NORM_DBFS / 20) / speech_rms
        # As resemblyzer.audio.wav_to_mel_spectrogram: power mel, not log.
        self.mel = mel_frames(audio * gain)
        self.torch = torch
        self.device = device
        self.lstm = torch.nn.LSTM(MEL_BANDS, EMBED_DIM, 3, batch_first=True)
        self.linear = torch.nn.Linear(EMBED_DIM, EMBED_DIM)
        state = torch.load(weights, map_location="cpu", weights_only=True)["model_state"]
        self.lstm.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("lstm.")})
        self.linear.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("linear.")})
        self.lstm.to(device).eval()
        self.linear.to(device).eval()

    def _forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)
        raw = self.torch.relu(self.linear(hidden[-1]))
        return raw / (self.torch.norm(raw, dim=1, keepdim=True) + 1e-10)

    def embed(self, spans: list[tuple[float, float]]) -> np.ndarray:
        """One unit embedding per (start, end) span; spans of equal length are batched."""
        out = np.zeros((len(spans), EMBED_DIM), dtype=np.float32)
        frames = [
            (int(round(s / MEL_HOP_S)), max(int(round((e - s) / MEL_HOP_S)), 1)) for s, e in spans
        ]
        by_len: dict[int, list[int]] = {}
        for i, (_, n) in enumerate(frames):
            by_len.setdefault(n, []).append(i)
        with self.torch.inference_mode():
            for n, idx in by_len.items():
                for k in range(0, len(idx), 256):
                    part = idx[k : k + 256]
                    batch = np.stack([self._frames(frames[i][0], n) for i in part])
                    mels = self.torch.from_numpy(batch).to(self.device)
                    out[part] = self._forward(mels).cpu().numpy()
        return out

    def embed_prefixes(self, starts: list[float], lengths: list[float]) -> np.ndarray:
        """Unit embeddings of the windows [start, start + length) for every start and length
        (starts × lengths × dim) from one pass of the LSTM over the longest: the state after
        n frames of a window is the state of any longer window from the same start after n
        frames, so each shorter window costs no more LSTM steps."""
        steps = [max(int(round(n / MEL_HOP_S)), 1) for n in lengths]
        longest = max(steps)
        out = np.zeros((len(starts), len(steps), EMBED_DIM), dtype=np.float32)
        first = [int(round(s / MEL_HOP_S)) for s in starts]
        torch = self.torch
        with torch.inference_mode():
            for k in range(0, len(starts), 256):
                batch = np.stack([self._frames(f, longest) for f in first[k : k + 256]])
                hidden, _ = self.lstm(torch.from_numpy(batch).to(self.device))
                raw = torch.relu(self.linear(hidden[:, [n - 1 for n in steps], :]))
                unit = raw / (torch.norm(raw, dim=2, keepdim=True) + 1e-10)
                out[k : k + len(batch)] = unit.cpu().numpy()
        return out

    def _frames(self, start: int, n: int) -> np.ndarray:
        piece = self.mel[start : start + n]
        if len(piece) < n:  # the episode's last frames: pad with silence
            piece = np.pad(piece, ((0, n - len(piece)), (0, 0)))
        return piece


def _window_spans(
    regions: list[tuple[float, float]], options: DiarizeOptions, duration_s: float
) -> tuple[list[tuple[float, float]], list[int], list[bool]]:
    spans: list[tuple[float, float]] = []
    region_of: list[int] = []
    long: list[bool] = []
    w, step = options.window_s, options.step_s
    for r, (s, e) in enumerate(regions):
        length = e - s
        if length >= w:
            n = int(np.ceil((length - w) / step)) + 1
            starts = np.linspace(s, e - w, n) if n > 1 else np.array([s])
            for a in starts:
                spans.append((float(a), float(a) + w))
                region_of.append(r)
                long.append(True)
        else:
            if length < options.min_window_s:  # too little voice: take some around it
                mid = (s + e) / 2
                s = max(0.0, min(mid - options.min_window_s / 2, duration_s - options.min_window_s))
                e = s + options.min_window_s
            spans.append((s, e))
            region_of.append(r)
            long.append(length >= 0.75 * w)
    return spans, region_of, long


# --- step 3: clustering -----------------------------------------------------------------------


def _eigengap_clusters(
    emb: np.ndarray, speakers: int | None, max_speakers: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """Labels 0..k-1 for unit embeddings ``emb`` by auto-tuned spectral clustering (NME-SC).

    For each pruning p (keep each window's p most similar windows), the Laplacian's largest
    gap among its smallest eigenvalues, normalised by its largest eigenvalue, says how clearly
    the graph falls into groups; the p with the smallest p / gap wins (a small p cuts noise
    but splits speakers; the ratio rewards the least pruning that still shows clear groups).
    The position of that gap is the number of speakers.
    """
    n = len(emb)
    if n < 3:
        return np.zeros(n, dtype=int), {"k": 1, "pruning": None}
    sim = np.clip(emb @ emb.T, 0.0, 1.0)
    max_k = max(1, min(max_speakers, n - 2, n // MIN_SPEAKER_WINDOWS))
    best: tuple[float, int, np.ndarray, np.ndarray] | None = None
    p_min = max(1, min(MIN_PRUNING, n // 3))
    p_max = max(p_min + 1, min(n - 1, n // 4))
    for p in sorted({int(round(x)) for x in np.linspace(p_min, p_max, min(p_max - p_min + 1, 24))}):
        lam, vec, lam_max = _laplacian_eigen(sim, p, max_k + 1)
        gap = float(np.diff(lam).max()) / (lam_max + 1e-10)
        ratio = (p / n) / (gap + 1e-10)
        if best is None or ratio < best[0]:
            best = (ratio, p, lam, vec)
    assert best is not None
    _, p, lam, vec = best
    found = int(np.argmax(np.diff(lam))) + 1
    k = max(1, min(speakers if speakers is not None else found, n))
    info = {"k": int(k), "pruning": int(p), "eigengap_k": found}
    if k == 1:
        return np.zeros(n, dtype=int), info
    if k > vec.shape[1]:  # more speakers asked for than eigenvectors computed
        lam, vec, _ = _laplacian_eigen(sim, p, k)
    spec = vec[:, :k]
    spec = spec / (np.linalg.norm(spec, axis=1, keepdims=True) + 1e-10)
    labels = _kmeans(spec, k)
    return labels, info


def _kmeans(points: np.ndarray, k: int, inits: int = 10, iterations: int = 100) -> np.ndarray:
    """Labels 0..k-1 of ``points`` by k-means (k-means++ seeding, ``inits`` seeded restarts,
    the lowest inertia wins): what scikit-learn's KMeans does, for a few hundred points in k
    dimensions, without its second of imports beside Whisper."""
    rng = np.random.default_rng(0)
    n = len(points)
    best_labels, best_inertia = np.zeros(n, dtype=int), np.inf
    for _ in range(inits):
        centres = [points[rng.integers(n)]]
        for _ in range(1, k):
            d2 = np.min(((points[:, None, :] - np.array(centres)[None]) ** 2).sum(-1), axis=1)
            total = d2.sum()
            pick = rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)
            centres.append(points[pick])
        c = np.array(centres)
        labels = np.zeros(n, dtype=int)
        for step in range(iterations):
            new = ((points[:, None, :] - c[None]) ** 2).sum(-1).argmin(axis=1)
            if step and np.array_equal(new, labels):
                break
            labels = new
            for j in range(k):
                members = points[labels == j]
                if len(members):
                    c[j] = members.mean(axis=0)
        inertia = float(((points - c[labels]) ** 2).sum())
        if inertia < best_inertia:
            best_labels, best_inertia = labels, inertia
    return best_labels


def _laplacian_eigen(sim: np.ndarray, p: int, count: int) -> tuple[np.ndarray, np.ndarray, float]:
    """The ``count`` + 1 smallest eigenvalues (ascending) and vectors of the Laplacian of
    ``sim`` kept to its p largest entries per row (symmetrised), and its largest eigenvalue."""
    from scipy.linalg import eigh

    keep = np.zeros_like(sim)
    top = np.argpartition(-sim, p - 1, axis=1)[:, :p]
    keep[np.arange(len(sim))[:, None], top] = 1.0
    aff = 0.5 * (keep + keep.T)
    lap = np.diag(aff.sum(axis=1)) - aff
    n = len(sim)
    lam, vec = eigh(lap, subset_by_index=[0, min(count, n - 1)])
    lam_max = float(eigh(lap, eigvals_only=True, subset_by_index=[n - 1, n - 1])[0])
    return lam, vec, lam_max


def _centroids(emb: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    # A cluster k-means left empty gets a zero centroid: similarity 0 to everything, never a
    # NaN that would win every argmax downstream.
    c = np.stack(
        [
            emb[labels == j].mean(axis=0) if np.any(labels == j) else np.zeros(emb.shape[1])
            for j in range(k)
        ]
    )
    return c / (np.linalg.norm(c, axis=1, keepdims=True) + 1e-10)


# --- step 4: re-segmentation ------------------------------------------------------------------


SHORT_PROTOTYPES = 24  # short windows per speaker that make its short-window centroid


# The most windows the spectral clustering sees: its dense affinity and eigen-decompositions
# grow with the square and cube of this (2,000 windows: 25 minutes of speech at a 0.75 s step).
# A longer episode is clustered on windows taken evenly through it; every window is then scored
# against the centroids, so all of it is still labelled.
MAX_CLUSTERED = 2000


def _evenly(mask: np.ndarray, most: int) -> np.ndarray:
    """``mask`` with at most ``most`` of its True entries kept, evenly spaced."""
    idx = np.nonzero(mask)[0]
    if len(idx) <= most:
        return mask
    keep = np.zeros_like(mask)
    keep[idx[np.linspace(0, len(idx) - 1, most).round().astype(int)]] = True
    return keep


def _window_similarities(
    encoder: _Encoder,
    windows: _Windows,
    voters: np.ndarray,
    clustered: np.ndarray,
    labels: np.ndarray,
    centroids: np.ndarray,
) -> np.ndarray:
    """Each window's similarity to each speaker (windows × speakers).

    A short window (an interjection) is compared with centroids made of windows just as short
    cut from each speaker's own long windows: embeddings of half a second of voice all lie
    closer to one another than to any long-window centroid, so against those they barely
    tell speakers apart ("Right." went to the wrong voice of two espeak voices)."""
    sims = windows.emb @ centroids.T
    short = np.nonzero(~voters)[0]
    k = centroids.shape[0]
    if not len(short) or k < 2:
        return sims
    starts, ends = windows.starts[clustered], windows.ends[clustered]  # labels are theirs
    lengths = sorted({round(float(windows.ends[i] - windows.starts[i]), 1) for i in short})
    # Prototype windows of every length start at the same place in a speaker's long window
    # (around its middle), so that one LSTM pass over the longest gives them all.
    firsts: list[float] = []
    owner: list[int] = []
    for j in range(k):
        idx = np.nonzero(labels == j)[0]
        for i in idx[:: max(1, len(idx) // SHORT_PROTOTYPES)][:SHORT_PROTOTYPES]:
            firsts.append(max(0.0, (starts[i] + ends[i]) / 2 - lengths[-1] / 2))
            owner.append(j)
    protos = encoder.embed_prefixes(firsts, lengths)
    owners = np.array(owner)
    for n, length in enumerate(lengths):
        cents = _centroids(protos[:, n], owners, k)
        these = [i for i in short if round(float(windows.ends[i] - windows.starts[i]), 1) == length]
        sims[these] = windows.emb[these] @ cents.T
    return sims


def _frame_scores(
    windows: _Windows, sims: np.ndarray, regions: list[tuple[float, float]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames of speech (time, region) and each frame's mean similarity (``sims``: windows ×
    speakers) over the windows that cover it."""
    times: list[float] = []
    region_of: list[int] = []
    for r, (s, e) in enumerate(regions):
        n = max(1, int(round((e - s) / FRAME_S)))
        for i in range(n):
            times.append(s + (i + 0.5) * (e - s) / n)
            region_of.append(r)
    t = np.array(times)
    reg = np.array(region_of)
    scores = np.zeros((len(t), sims.shape[1]))
    # each frame: the windows of its region that cover it, or the nearest one of its region
    for r in range(len(regions)):
        fi = np.nonzero(reg == r)[0]
        wi = np.nonzero(windows.region == r)[0]
        if not len(fi) or not len(wi):
            continue
        ft = t[fi][:, None]
        cover = (windows.starts[wi][None, :] <= ft) & (ft < windows.ends[wi][None, :])
        mid = (windows.starts[wi] + windows.ends[wi]) / 2
        # windows near the frame weigh more than ones that only graze it
        weight = cover * (1.0 / (0.25 + np.abs(ft - mid[None, :])))
        none = weight.sum(axis=1) == 0
        if none.any():
            nearest = np.argmin(np.abs(ft[none] - mid[None, :]), axis=1)
            weight[np.nonzero(none)[0], nearest] = 1.0
        weight = weight / weight.sum(axis=1, keepdims=True)
        scores[fi] = weight @ sims[wi]
    return t, reg, scores


def _viterbi(scores: np.ndarray, region: np.ndarray, options: DiarizeOptions) -> np.ndarray:
    """Best label per frame: similarity summed over frames minus a price per change."""
    n, k = scores.shape
    if n == 0:
        return np.zeros(0, dtype=int)
    back = np.zeros((n, k), dtype=int)
    total = scores[0].copy()
    for i in range(1, n):
        price = options.switch_penalty if region[i] == region[i - 1] else options.pause_penalty
        stay = total
        best_prev = int(np.argmax(total))
        move = total[best_prev] - price
        choose_move = move > stay
        back[i] = np.where(choose_move, best_prev, np.arange(k))
        total = np.where(choose_move, move, stay) + scores[i]
    path = np.zeros(n, dtype=int)
    path[-1] = int(np.argmax(total))
    for i in range(n - 1, 0, -1):
        path[i - 1] = back[i, path[i]]
    return path


def _refine_boundaries(
    encoder: _Encoder,
    times: np.ndarray,
    region: np.ndarray,
    path: np.ndarray,
    centroids: np.ndarray,
    options: DiarizeOptions,
) -> np.ndarray:
    """Move each change of speaker inside speech to where short windows on either side agree."""
    path = path.copy()
    changes = [
        i for i in range(1, len(path)) if path[i] != path[i - 1] and region[i] == region[i - 1]
    ]
    if not changes:
        return path
    half = options.sub_window_s / 2
    spans: list[tuple[float, float]] = []
    owners: list[tuple[int, np.ndarray]] = []
    for i in changes:
        reg_frames = np.nonzero(region == region[i])[0]
        lo = max(reg_frames[0], i - int(1.0 / FRAME_S))
        hi = min(reg_frames[-1], i + int(1.0 / FRAME_S))
        cand = np.arange(lo, hi + 1)
        owners.append((i, cand))
        for j in cand:
            spans.append((max(0.0, times[j] - half), times[j] + half))
    sims = encoder.embed(spans) @ centroids.T
    k0 = 0
    for i, cand in owners:
        a, b = path[i - 1], path[i]
        local = sims[k0 : k0 + len(cand)]
        k0 += len(cand)
        prefer_b = local[:, b] - local[:, a]  # > 0 where b sounds more like itself
        # the cut that best separates "a before, b after" in the short windows
        cum_a = np.concatenate([[0.0], np.cumsum(-prefer_b)])
        cum_b = np.concatenate([np.cumsum(prefer_b[::-1])[::-1], [0.0]])
        cut = int(np.argmax(cum_a + cum_b))
        lo = cand[0]
        # only within the stretch where the path goes a … a b … b
        left = i
        while left - 1 >= lo and path[left - 1] == a:
            left -= 1
        right = i
        while right + 1 <= cand[-1] and path[right + 1] == b:
            right += 1
        new = min(max(lo + cut, left + 1), right)
        path[left:new] = a
        path[new : right + 1] = b
    return path


def _turns(
    times: np.ndarray,
    region: np.ndarray,
    path: np.ndarray,
    regions: list[tuple[float, float]],
    names: list[str],
    options: DiarizeOptions,
) -> tuple[SpeakerSpan, ...]:
    """Runs of one label, cut to the speech regions, short runs inside speech absorbed."""
    runs: list[list[Any]] = []  # [label, start, end, region]
    for r, (s, e) in enumerate(regions):
        fi = np.nonzero(region == r)[0]
        if not len(fi):
            continue
        edges = [s] + [float((times[i - 1] + times[i]) / 2) for i in fi[1:]] + [e]
        for n, i in enumerate(fi):
            label = int(path[i])
            if runs and runs[-1][3] == r and runs[-1][0] == label:
                runs[-1][2] = edges[n + 1]
            else:
                runs.append([label, edges[n], edges[n + 1], r])
    # A run shorter than min_turn_s with speech of the same region on both sides is the
    # re-segmentation hesitating at a boundary: give it to its longer neighbour.
    changed = True
    while changed:
        changed = False
        for n, run in enumerate(runs):
            if run[2] - run[1] >= options.min_turn_s:
                continue
            prev = runs[n - 1] if n and runs[n - 1][3] == run[3] else None
            nxt = runs[n + 1] if n + 1 < len(runs) and runs[n + 1][3] == run[3] else None
            if prev is None and nxt is None:
                continue  # a whole short region: an interjection, kept as it is
            target = max((x for x in (prev, nxt) if x is not None), key=lambda x: x[2] - x[1])
            if target is prev:
                target[2] = run[2]
            else:
                target[1] = run[1]
            del runs[n]
            # neighbours of one label that now touch become one run
            merged: list[list[Any]] = []
            for x in runs:
                if merged and merged[-1][0] == x[0] and merged[-1][3] == x[3]:
                    merged[-1][2] = x[2]
                else:
                    merged.append(x)
            runs = merged
            changed = True
            break
    return tuple(SpeakerSpan(names[label], round(s, 3), round(e, 3)) for label, s, e, _ in runs)


# --- the whole -------------------------------------------------------------------------------


def check_diarizer() -> None:
    """AudioError, naming the package to install, when the diarizer's models are missing."""
    _model_files()


def prepare_diarizer() -> None:
    """Import what the diarizer needs (torch, silero-vad, the model files' hashes)
    and hash its model files, so that a caller can do it while the episode is still being
    fetched and decoded (ffmpeg leaves a core free) instead of beside Whisper's decoding.

    The diarizer keeps torch's thread count as it finds it. Setting one thread from the
    diarizer's own thread is not private to that thread: it made Whisper's decoder run on one
    thread too, and a quiet conversation-dev run with diarization took +34 % to +50 % instead
    of +1 % to +17 % (scripts/speaker_overhead.py, three alternating pairs each)."""
    files = _model_files()
    _load_vad(files["silero_vad"])
    _models_provenance(files)


def diarize_audio(wav: Path, episode_id: str, options: DiarizeOptions | None = None) -> Diarization:
    """Speaker turns of the 16 kHz mono WAV ``wav`` (an episode decoded by decode_audio)."""
    options = options or DiarizeOptions()
    started = time.perf_counter()
    files = _model_files()  # fails early, naming the missing package
    models = _models_provenance(files)
    audio = _read_wav(Path(wav))
    duration_s = len(audio) / SAMPLE_RATE
    regions = _speech_regions(audio, options, files["silero_vad"])
    details: dict[str, Any] = {"speech_regions": len(regions)}
    turns: tuple[SpeakerSpan, ...] = ()
    if regions:
        encoder = _Encoder(audio, regions, files["resemblyzer"], _encoder_device(options.device))
        spans, region_of, long = _window_spans(regions, options, duration_s)
        windows = _Windows(
            starts=np.array([s for s, _ in spans]),
            ends=np.array([e for _, e in spans]),
            region=np.array(region_of),
            long=np.array(long),
            emb=encoder.embed(spans),
        )
        voters = windows.long if windows.long.sum() >= 3 else np.ones(len(spans), dtype=bool)
        clustered = _evenly(voters, MAX_CLUSTERED)
        labels, info = _eigengap_clusters(
            windows.emb[clustered], options.speakers, options.max_speakers
        )
        k = int(info["k"])
        centroids = _centroids(windows.emb[clustered], labels, k)
        sims = _window_similarities(encoder, windows, voters, clustered, labels, centroids)
        times, region, scores = _frame_scores(windows, sims, regions)
        path = _viterbi(scores, region, options)
        if k > 1:
            path = _refine_boundaries(encoder, times, region, path, centroids, options)
        # SPEAKER_1 is whoever speaks first
        order = list(dict.fromkeys(path.tolist()))
        names = [""] * k
        for n, label in enumerate(order):
            names[label] = f"{LABEL_PREFIX}{n + 1}"
        turns = _turns(times, region, path, regions, names, options)
        details |= {"windows": len(spans), "clustered_windows": int(clustered.sum()), **info}
    elapsed = time.perf_counter() - started
    provenance = {
        "diarizer": "podscribe silero-vad + resemblyzer + NME-SC spectral clustering",
        "models": models,
        "options": dataclasses.asdict(options),
        "code_version": code_version(),
        "found": details,
        # which process diarized: with a shared storage root, possibly another machine's
        "made_by": {"host": socket.gethostname(), "pid": os.getpid()},
    }
    return Diarization(episode_id, duration_s, turns, provenance, round(elapsed, 3))
