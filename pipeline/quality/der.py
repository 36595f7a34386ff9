"""Diarization error rate (DER) of speaker spans against reference spans (an RTTM).

pyannote.metrics conventions, which tests hold this against: a collar of ``collar_s`` seconds
(total width, so half either side) around every reference span's start and end is not scored,
on either side; overlapping speech is scored, every speaker in it counted; hypothesis speakers
are mapped one to one onto reference speakers so that the time they share is greatest
(Hungarian assignment), computed on the scored time. One difference, on purpose: a speaker
whose own spans overlap counts once there (pyannote counts each track).

Over every stretch of time where the sets of speakers do not change (duration d, N_ref
reference and N_hyp hypothesis speakers, N_correct of them mapped right):
miss += d·max(0, N_ref − N_hyp), false alarm += d·max(0, N_hyp − N_ref),
confusion += d·(min(N_ref, N_hyp) − N_correct), total += d·N_ref; DER = the three / total.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from pipeline.core.errors import OptionsError
from pipeline.core.types import DiarizationScore, SpeakerSpan

__all__ = ["DEFAULT_COLLAR_S", "diarization_error", "overlap_pieces"]

DEFAULT_COLLAR_S = 0.25  # seconds, total width around each reference boundary (pyannote's)


def _merge(zones: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(zones):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def overlap_pieces(
    reference: Sequence[SpeakerSpan], hypothesis: Sequence[SpeakerSpan], collar_s: float = 0.0
) -> list[tuple[float, frozenset[str], frozenset[str]]]:
    """(duration, reference speakers, hypothesis speakers) of each stretch of time in which
    neither set changes, outside the collars; stretches where nobody talks are left out."""
    half = collar_s / 2
    collars = _merge(
        [(t - half, t + half) for s in reference for t in (s.start, s.end)] if half > 0 else []
    )
    bounds = sorted(
        {t for s in (*reference, *hypothesis) for t in (s.start, s.end)}
        | {t for zone in collars for t in zone}
    )
    collar_starts = [z[0] for z in collars]

    def in_collar(t: float) -> bool:
        k = bisect.bisect_right(collar_starts, t) - 1
        return k >= 0 and collars[k][0] < t < collars[k][1]

    # One sweep over the boundaries, keeping who is talking: linear in the number of spans
    # (plus a sort), so a two-hour episode with thousands of turns scores in well under a second.
    changes: dict[float, list[tuple[Counter[str], str, int]]] = {}
    ref_active: Counter[str] = Counter()
    hyp_active: Counter[str] = Counter()
    for active, spans in ((ref_active, reference), (hyp_active, hypothesis)):
        for s in spans:
            if s.end > s.start:
                changes.setdefault(s.start, []).append((active, s.speaker, 1))
                changes.setdefault(s.end, []).append((active, s.speaker, -1))
    out = []
    for a, b in zip(bounds, bounds[1:], strict=False):
        for active, speaker, step in changes.get(a, ()):
            active[speaker] += step
        if in_collar((a + b) / 2):
            continue
        ref = frozenset(k for k, n in ref_active.items() if n > 0)
        hyp = frozenset(k for k, n in hyp_active.items() if n > 0)
        if ref or hyp:
            out.append((b - a, ref, hyp))
    return out


def _mapping(
    pieces: list[tuple[float, frozenset[str], frozenset[str]]],
    ref_names: list[str],
    hyp_names: list[str],
) -> dict[str, str]:
    """hypothesis speaker -> reference speaker, one to one, most shared scored time."""
    shared = np.zeros((len(hyp_names), len(ref_names)))
    h_index = {h: i for i, h in enumerate(hyp_names)}
    r_index = {r: j for j, r in enumerate(ref_names)}
    for d, ref, hyp in pieces:
        for h in hyp:
            for r in ref:
                shared[h_index[h], r_index[r]] += d
    if not shared.size:
        return {}
    rows, cols = linear_sum_assignment(shared, maximize=True)
    return {
        hyp_names[i]: ref_names[j]
        for i, j in zip(rows.tolist(), cols.tolist(), strict=True)
        if shared[i, j] > 0
    }


def diarization_error(
    reference: Sequence[SpeakerSpan],
    hypothesis: Sequence[SpeakerSpan],
    collar_s: float = DEFAULT_COLLAR_S,
) -> DiarizationScore:
    """DER of ``hypothesis`` against ``reference`` with its miss, false alarm and confusion."""
    if collar_s < 0:
        raise OptionsError(f"DER collar must be >= 0 seconds, got {collar_s}")
    pieces = overlap_pieces(reference, hypothesis, collar_s)
    ref_names = sorted({s.speaker for s in reference})
    hyp_names = sorted({s.speaker for s in hypothesis})
    mapping = _mapping(pieces, ref_names, hyp_names)
    total = miss = false_alarm = confusion = 0.0
    for d, ref, hyp in pieces:
        n_ref, n_hyp = len(ref), len(hyp)
        correct = sum(1 for h in hyp if mapping.get(h) in ref)
        total += d * n_ref
        miss += d * max(0, n_ref - n_hyp)
        false_alarm += d * max(0, n_hyp - n_ref)
        confusion += d * (min(n_ref, n_hyp) - correct)
    return DiarizationScore(
        der=(miss + false_alarm + confusion) / total if total else None,
        total_s=round(total, 6),
        miss_s=round(miss, 6),
        false_alarm_s=round(false_alarm, 6),
        confusion_s=round(confusion, 6),
        collar_s=collar_s,
        ref_speakers=len(ref_names),
        hyp_speakers=len(hyp_names),
        mapping=tuple((h, mapping.get(h)) for h in hyp_names),
    )
