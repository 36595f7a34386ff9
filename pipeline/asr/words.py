"""Word timings: whisper's cross-attention alignment without its JIT cost, and words kept on
the sound they are heard in.

``whisper.timing`` finds each word's frames with a dynamic time warping over the alignment
heads' attention, written for numba: the first call in a process compiles it, 3-6 s of CPU on
the machines here, more than timing every word of a 5-minute episode costs. ``dtw_path`` is the
same recurrence and the same tie rule, vectorised along each token's row with numpy (a running
minimum over prefix sums), and ``use_numpy_dtw`` puts it in ``whisper.timing``'s place.

Whisper stretches a word next to a pause over the pause; ``fit_words_to_sound`` moves a word's
start (end) onto the first (last) sounding 10 ms frame inside it, so no word starts in silence.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.audio.analysis import FRAME_HOP_S, FRAME_N
from pipeline.core.types import SAMPLE_RATE, Word

# A word is never shortened below this, whatever the frames say: a quiet word is still a word.
MIN_WORD_S = 0.02
# Frame i of ``analysis.sounding_frames`` covers [i * FRAME_HOP_S, + FRAME_S] (it is filed under
# its centre). A loud frame holds sound somewhere inside it: sound starts no later than the end
# of the first loud frame and ends no earlier than the start of the last one. Those bounds are
# where a word fitted to the sound starts and ends, so it never starts or ends in silence (at
# most a frame late or early: 0-30 ms on the espeak-ng fixtures).
_FRAME_S = FRAME_N / SAMPLE_RATE
_FRAME_CENTRE_S = _FRAME_S / 2
_ONSET_S = _FRAME_S
_OFFSET_S = 0.0


def dtw_path(x: np.ndarray) -> np.ndarray:
    """The cheapest monotonic path through cost matrix ``x`` (tokens x frames), as whisper's
    ``dtw_cpu`` returns it: an array (2, path length) of (token, frame) indices.

    Row by row: cost[i, j] = x[i-1, j-1] + min(cost[i-1, j-1], cost[i-1, j], cost[i, j-1]);
    the left neighbour's chain is a running minimum over prefix sums, so each row is a few
    array operations instead of a Python loop over frames. Ties go as in whisper (left).
    """
    x = np.asarray(x, dtype=np.float64)
    n, m = x.shape
    trace = np.empty((n + 1, m + 1), dtype=np.int8)
    prev = np.full(m + 1, np.inf)
    prev[0] = 0.0
    for i in range(1, n + 1):
        c0, c1 = prev[:-1], prev[1:]  # diagonal and upper neighbour of each j in 1..m
        above = np.minimum(c0, c1)
        sums = np.cumsum(x[i - 1])
        before = np.concatenate(([0.0], sums[:-1]))
        with np.errstate(invalid="ignore"):  # inf - inf never occurs; inf - finite does
            row = sums + np.minimum.accumulate(above - before)
        c2 = np.concatenate(([np.inf], row[:-1]))
        trace[i, 1:] = np.where((c0 < c1) & (c0 < c2), 0, np.where((c1 < c0) & (c1 < c2), 1, 2))
        prev = np.concatenate(([np.inf], row))
    return _backtrace(trace)


def _backtrace(trace: np.ndarray) -> np.ndarray:
    trace[0, :] = 2
    trace[:, 0] = 1
    i, j = trace.shape[0] - 1, trace.shape[1] - 1
    path: list[tuple[int, int]] = []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        step = trace[i, j]
        if step == 0:
            i, j = i - 1, j - 1
        elif step == 1:
            i -= 1
        else:
            j -= 1
    return np.array(path[::-1]).T


_INSTALLED = False


def use_numpy_dtw() -> None:
    """Make ``whisper.timing`` align with ``dtw_path`` (CPU; its CUDA kernel stays as it is).

    Same results up to exact floating-point ties; installed once per process, before any
    word is timed, so numba never compiles its version."""
    global _INSTALLED
    if _INSTALLED:
        return
    import whisper.timing

    whisper.timing.dtw_cpu = dtw_path
    _INSTALLED = True


def fit_words_to_sound(
    words: tuple[Word, ...], sounding: np.ndarray, offset: float
) -> tuple[Word, ...]:
    """``words`` (episode seconds; the samples ``sounding`` came from start at ``offset``) with
    each start moved forward to the first sounding frame inside the word and each end back to
    the last one. A word with no sounding frame inside keeps its times: there is nothing to
    say where else it is."""
    out = []
    for w in words:
        lo = max(0, math.ceil((w.start - offset - _FRAME_CENTRE_S) / FRAME_HOP_S))
        hi = min(len(sounding), math.floor((w.end - offset - _FRAME_CENTRE_S) / FRAME_HOP_S) + 1)
        loud = np.flatnonzero(sounding[lo:hi]) if hi > lo else np.empty(0, dtype=np.int64)
        if len(loud) == 0:
            out.append(w)
            continue
        # Only a word that opens (closes) on silent frames moves: one that is heard from its
        # first frame on keeps the aligner's time, which is finer than these frames.
        start, end = w.start, w.end
        if loud[0] > 0:
            start = max(w.start, min(offset + (lo + loud[0]) * FRAME_HOP_S + _ONSET_S, w.end))
        if loud[-1] < hi - lo - 1:
            end = min(w.end, offset + (lo + loud[-1]) * FRAME_HOP_S + _OFFSET_S)
        end = max(end, start)
        if end - start < MIN_WORD_S:
            end = max(start, min(w.end, start + MIN_WORD_S))
        out.append(Word(round(start, 3), round(end, 3), w.text, w.probability))
    return tuple(out)
