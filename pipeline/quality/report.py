"""The episode report: one self-contained HTML page (and a markdown twin for Prefect artifacts).

``transcripts/<episode>/report.html`` opens from disk with no network: CSS is inline and the
timeline plot is a base64 PNG. It shows the summary numbers, WER per chunk along the episode
with the quality flags, the worst chunks with their aligned reference and hypothesis (errors
coloured), the most frequent substitutions, S/D/I, errors near chunk cuts against elsewhere,
every chunk's reference-free signals, and what was repaired. Without a reference it shows the
signals and flags only. Where the reference or the transcript names speakers, a speaker section
(``pipeline.quality.speaker_report``): a timeline, WER per speaker and the wrongly labelled turns.

:func:`rebuild_report` makes it again from the files in the episode folder alone.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.errors import PodscribeError
from pipeline.core.store import read_json, write_text_atomic
from pipeline.core.types import Score, SpeakerTurn, Transcript, chunk_number, score_from_dict
from pipeline.quality.score import (
    AlignedWord,
    WordAlignment,
    align_words,
    chunk_alignment,
    segment_error_counts,
)
from pipeline.quality.signals import ChunkSignals, QualityReport, quality_report_from_dict
from pipeline.quality.speaker_report import (
    SpeakerReport,
    speaker_colours,
    speaker_report,
    timeline_svg,
)

REPORT_NAME = "report.html"
QUALITY_NAME = "quality.json"
REFERENCE_NAME = "reference.txt"  # the parsed reference text, so a report can be rebuilt
REFERENCE_TURNS_NAME = "reference.turns.json"  # its speaker turns, where it names speakers
RUN_NAME = "run.json"  # run id, timing and feed of the run that wrote the folder
WORST_CHUNKS = 3
TOP_CONFUSIONS = 15
FLAG_COLOURS = {  # one colour per flag, shared by the plot and the tables
    "hallucination": "#d62728",
    "dropped_speech": "#9467bd",
    "low_confidence": "#ff7f0e",
}


@dataclass(frozen=True)
class ReportInput:
    """Everything a report is made from (all of it readable back from the episode folder)."""

    transcript: Transcript
    score: Score | None
    quality: QualityReport | None
    reference_text: str | None = None
    elapsed_s: float | None = None  # wall time of the run, for RTFx
    run_id: str | None = None
    # The reference's speaker turns (their texts joined are reference_text); () unlabelled.
    reference_turns: tuple[SpeakerTurn, ...] = ()

    # Computed once per report: the HTML page, the markdown artifact and score.json all use
    # them, and aligning an episode's words (or pairing its speakers) is not free.
    @functools.cached_property
    def alignment(self) -> WordAlignment | None:
        """The transcript's words aligned to the reference's; None without a score."""
        if self.score is None or self.reference_text is None:
            return None
        return align_words(self.transcript, self.reference_text)

    @functools.cached_property
    def speaker_section(self) -> SpeakerReport | None:
        """The speaker section's numbers; None where no one is named on either side."""
        alignment = self.alignment or WordAlignment((), (), ())
        turns = self.reference_turns if alignment.ref_words else ()
        cp = self.score.speakers if self.score is not None else None
        return speaker_report(self.transcript, alignment, turns, cp)

    @property
    def rtfx(self) -> float | None:
        """Seconds of audio per second of the run (or of transcription, summed over chunks)."""
        elapsed = self.elapsed_s
        if elapsed is None:
            elapsed = sum(c.elapsed_s for c in self.transcript.chunks) or None
        return self.transcript.duration_s / elapsed if elapsed else None


# --- numbers shared by both renderings -----------------------------------------------------


def confusion_pairs(
    alignment: WordAlignment, top: int = TOP_CONFUSIONS
) -> list[tuple[str, str, int]]:
    """The most frequent substitutions as (reference word, hypothesis word, count)."""
    pairs = Counter(
        (w.ref, w.hyp) for w in alignment.words if w.op == "substitute" and w.ref and w.hyp
    )
    return [(r, h, n) for (r, h), n in pairs.most_common(top)]


def worst_chunks(score: Score, top: int = WORST_CHUNKS) -> list[int]:
    """Indices of the chunks with the most errors (then the highest WER), worst first."""
    scored = [c for c in score.chunks if c.counts.errors > 0]
    scored.sort(key=lambda c: (-c.counts.errors, -(c.wer or 0.0), c.chunk_index))
    return [c.chunk_index for c in scored[:top]]


def _model_line(transcript: Transcript) -> tuple[str, str]:
    models = transcript.provenance.get("models") or []
    if not models and transcript.chunks:
        m = transcript.chunks[0].model
        return m.name, m.sha256
    names = " + ".join(m.get("name", "?") for m in models) or "?"
    hashes = " + ".join(m.get("sha256", "?")[:16] for m in models) or "?"
    return names, hashes


def _speaker_rows(s: Score) -> list[tuple[str, str]]:
    """cpWER and DER rows, where the score has them."""
    rows: list[tuple[str, str]] = []
    if s.speakers is not None:
        sp = s.speakers
        rows.append(
            (
                "cpWER (speakers found / in the reference)",
                f"{_pct(sp.cpwer)} ({sp.hyp_speakers} / {sp.ref_speakers})",
            )
        )
    if s.diarization is not None:
        d = s.diarization
        rows.append(
            (
                f"DER (miss / false alarm / confusion, collar {d.collar_s:g} s)",
                f"{_pct(d.der)} ({d.miss_s:.1f} / {d.false_alarm_s:.1f} / {d.confusion_s:.1f} s "
                f"of {d.total_s:.1f} s)",
            )
        )
    return rows


def summary_rows(data: ReportInput) -> list[tuple[str, str]]:
    """(label, value) pairs of the summary table."""
    t, s = data.transcript, data.score
    model, weights = _model_line(t)
    rows: list[tuple[str, str]] = []
    if s is not None:
        c = s.counts
        rows += [
            ("WER", f"{s.wer:.2%}"),
            ("CER", f"{s.cer:.2%}"),
            ("MER", f"{s.mer:.2%}"),
            ("WIL", f"{s.wil:.2%}"),
            (
                "substitutions / deletions / insertions",
                f"{c.substitutions} / {c.deletions} / {c.insertions}",
            ),
            ("reference words / hypothesis words", f"{c.ref_words} / {s.hyp_words}"),
        ]
        if s.cuts is not None:
            rows.append(
                (
                    f"error rate within ±{s.cuts.window_s:g} s of a cut / elsewhere",
                    f"{_pct(s.cuts.near_rate)} ({s.cuts.near_errors}/{s.cuts.near_ref_words}) / "
                    f"{_pct(s.cuts.far_rate)} ({s.cuts.far_errors}/{s.cuts.far_ref_words})",
                )
            )
        rows += _speaker_rows(s)
    else:
        rows.append(("WER", "no reference: reference-free signals only"))
    rtfx = data.rtfx
    rows += [
        ("duration", f"{t.duration_s:.1f} s in {len(t.chunks)} chunks"),
        ("RTFx", f"{rtfx:.1f}" if rtfx else "n/a"),
        ("model", model),
        ("weights sha256", weights),
        ("code version", str(t.provenance.get("code_version", "?"))),
    ]
    if data.quality is not None:
        rows.append(("taken out of the transcript", taken_out_summary(data.quality)))
        flagged = data.quality.flagged()
        rows.append(
            (
                "flagged chunks",
                ", ".join(f"{chunk_number(f.chunk_index)} ({', '.join(f.names)})" for f in flagged)
                or "none",
            )
        )
        rows.append(
            (
                "repaired chunks",
                ", ".join(
                    f"{chunk_number(r.chunk_index)} (kept {r.kept})" for r in data.quality.repairs
                )
                or "none",
            )
        )
    if data.run_id:
        rows.append(("run id", data.run_id))
    return rows


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


# --- plot ------------------------------------------------------------------------------------


def _import_plotting() -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display, no GUI toolkit: files only
    import matplotlib.patches
    import matplotlib.pyplot


def preload_plotting() -> threading.Thread:
    """Import matplotlib on a daemon thread, for a report rendered later: the import takes
    0.4-0.8 s on 2 CPU cores, which an episode's transcription hides (the model's kernels
    release the GIL). Call it when long work begins; importing twice is harmless."""
    thread = threading.Thread(
        target=_import_plotting, name="podscribe-import-matplotlib", daemon=True
    )
    thread.start()
    return thread


def timeline_png(data: ReportInput) -> bytes:
    """The timeline plot: WER per chunk (or words per second without a reference) and flags."""
    _import_plotting()
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    t, s, q = data.transcript, data.score, data.quality
    fig, ax = plt.subplots(figsize=(11, 3.2), dpi=100)
    try:
        starts = [c.start_s for c in t.chunks]
        widths = [c.end_s - c.start_s for c in t.chunks]
        if s is not None:
            by_index = {c.chunk_index: c for c in s.chunks}
            heights = [
                100 * (by_index[c.chunk_index].wer or 0.0) if c.chunk_index in by_index else 0.0
                for c in t.chunks
            ]
            ax.set_ylabel("WER per chunk (%)")
            ax.axhline(100 * s.wer, color="#444", lw=1, ls="--", label=f"episode WER {s.wer:.1%}")
        else:
            sig = {x.chunk_index: x for x in (q.signals if q else ())}
            heights = [
                sig[c.chunk_index].words_per_s if c.chunk_index in sig else 0.0 for c in t.chunks
            ]
            ax.set_ylabel("words per second")
        ax.bar(
            starts,
            heights,
            width=widths,
            align="edge",
            color="#4c78a8",
            alpha=0.85,
            edgecolor="white",
            linewidth=1,
        )
        top = max([*heights, 1.0]) * 1.25
        handles: list[Any] = []
        if q is not None:
            for f in q.flags:
                if not f.any:
                    continue
                c = next(x for x in t.chunks if x.chunk_index == f.chunk_index)
                for k, name in enumerate(f.names):
                    ax.axvspan(
                        c.start_s,
                        c.end_s,
                        ymin=0.92 - 0.07 * k,
                        ymax=0.99 - 0.07 * k,
                        color=FLAG_COLOURS[name],
                        alpha=0.9,
                    )
            handles = [
                Patch(color=col, label=name)
                for name, col in FLAG_COLOURS.items()
                if any(name in f.names for f in q.flags)
            ]
        for c in t.chunks[1:]:
            ax.axvline(c.start_s, color="#bbb", lw=0.6, ls=":")
        ax.set_xlim(0, max(t.duration_s, 1.0))
        ax.set_ylim(0, top)
        ax.set_xlabel("episode time (s)")
        line_handles, _ = ax.get_legend_handles_labels()
        if handles or line_handles:
            ax.legend(
                handles=line_handles + handles,
                loc="upper left",
                fontsize=8,
                ncol=4,
                bbox_to_anchor=(0, 1.22),
                frameon=False,
            )
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)


# --- HTML --------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1180px;
color:#222;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 10px;border-bottom:1px solid #eee;
text-align:left;vertical-align:top}th{background:#f6f6f6}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#777}.flag{display:inline-block;padding:0 6px;border-radius:8px;color:#fff;
font-size:12px;margin-right:3px}
.al{font:13px/1.3 ui-monospace,Menlo,Consolas,monospace;display:flex;flex-wrap:wrap;gap:2px 6px;
margin:6px 0 14px}
.w{display:inline-flex;flex-direction:column}.w span{white-space:pre;padding:0 2px}
.w .h{color:#555}.sub .r,.sub .h{background:#fde2b3}.del .r{background:#f8c4c4;
text-decoration:line-through}.ins .h{background:#c9def7}.gap{color:#bbb}
img.plot{max-width:100%;border:1px solid #eee}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _flag_badges(names: Sequence[str]) -> str:
    return "".join(
        f'<span class="flag" style="background:{FLAG_COLOURS[n]}">{_esc(n)}</span>' for n in names
    )


def _alignment_html(words: Sequence[AlignedWord]) -> str:
    cells = []
    for w in words:
        cls = {"equal": "eq", "substitute": "sub", "delete": "del", "insert": "ins"}[w.op]
        ref = _esc(w.ref) if w.ref else '<span class="gap">·</span>'
        hyp = _esc(w.hyp) if w.hyp else '<span class="gap">·</span>'
        cells.append(
            f'<span class="w {cls}" title="{w.time:.1f} s"><span class="r">{ref}</span>'
            f'<span class="h">{hyp}</span></span>'
        )
    return f'<div class="al">{"".join(cells)}</div>'


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    head = f"<tr>{head}</tr>" if any(headers) else ""
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table>{head}{body}</table>"


def _signal_cells(s: ChunkSignals) -> list[str]:
    return [
        f"{s.words}",
        f"{s.words_per_s:.2f}",
        "–" if s.avg_logprob is None else f"{s.avg_logprob:.2f}",
        "–" if s.no_speech_prob is None else f"{s.no_speech_prob:.2f}",
        f"{s.compression_ratio:.2f}",
        _esc(f"{s.top_ngram} ×{s.top_ngram_count}") if s.top_ngram_count else "–",
        f"{s.speech_s:.1f}",
        f"{s.music_s:.1f}",
        f"{s.uncovered_sound_s:.1f}",
        f"{s.words_over_nonspeech}",
    ]


_SIGNAL_HEADERS = [
    "words",
    "words/s",
    "avg logprob",
    "no-speech",
    "compression",
    "top 3-gram",
    "speech s",
    "music s",
    "sound without text s",
    "words over non-speech",
]


def _chunks_section(data: ReportInput) -> str:
    q = data.quality
    if q is None:
        return ""
    wer = {c.chunk_index: c for c in data.score.chunks} if data.score else {}
    rows = []
    for s, f in zip(q.signals, q.flags, strict=True):
        c = wer.get(s.chunk_index)
        rows.append(
            [
                f"{chunk_number(s.chunk_index)}",
                f"{s.start_s:.1f}–{s.end_s:.1f}",
                "–" if c is None or c.wer is None else f"{c.wer:.1%}",
                *_signal_cells(s),
                _flag_badges(f.names)
                + "".join(f'<div class="muted">{_esc(r)}</div>' for r in f.reasons),
            ]
        )
    headers = ["chunk", "time (s)", "WER", *_SIGNAL_HEADERS, "flags"]
    return "<h2>Chunks: reference-free signals and flags</h2>" + _table(
        headers, rows, set(range(2, 13))
    )


def taken_out_summary(q: QualityReport) -> str:
    """What the quality stage took out, in words: "2 segments with no speech under them, 1
    guess in a chunk's tail, 8 filler words" (or "nothing")."""
    n_speech = sum(s.dropped_nonspeech for s in q.signals)
    n_guess = sum(s.dropped_guesses for s in q.signals)
    n_filler = sum(s.fillers_removed for s in q.signals)
    parts = []
    if n_speech:
        parts.append(
            "1 segment with no speech under it"
            if n_speech == 1
            else f"{n_speech} segments with no speech under them"
        )
    if n_guess:
        parts.append(f"{n_guess} {'guess' if n_guess == 1 else 'guesses'} in a chunk's tail")
    if n_filler:
        parts.append(f"{n_filler} filler {'word' if n_filler == 1 else 'words'}")
    return ", ".join(parts) or "nothing"


def taken_out_rows(q: QualityReport) -> list[list[str]]:
    """One row per segment taken out: chunk, time, why, its text (plain strings)."""
    return [
        [str(chunk_number(s.chunk_index)), f"{x.start_s:.1f}–{x.end_s:.1f}", x.reason, x.text]
        for s in q.signals
        for x in s.taken_out
    ]


_TAKEN_OUT_HEADERS = ["chunk", "time (s)", "why", "text"]


def _taken_out_section(q: QualityReport | None) -> str:
    if q is None:
        return ""
    rows = taken_out_rows(q)
    head = (
        "<h2>Taken out of the transcript</h2><p class='muted'>Segments written over audio "
        "with no speech, or guessed in a chunk's last moments, are not in the transcript; "
        f"here they are, to check. In all: {_esc(taken_out_summary(q))}.</p>"
    )
    if not rows:
        return head
    return head + _table(_TAKEN_OUT_HEADERS, [[_esc(c) for c in r] for r in rows], set())


def _repairs_section(q: QualityReport | None) -> str:
    if q is None:
        return ""
    if not q.repairs:
        return "<h2>Repairs</h2><p>No chunk was re-transcribed.</p>"
    rows = []
    for r in q.repairs:
        policy = ", ".join(
            f"{k}={r.policy.get(k)}"
            for k in ("beam_size", "no_speech_threshold", "initial_prompt")
            if k in r.policy
        )
        rows.append(
            [
                f"{chunk_number(r.chunk_index)}",
                _flag_badges(r.flags_before),
                f"<b>{_esc(r.kept)}</b>",
                _flag_badges(r.flags_after) or "none",
                f"{r.before.words} → {r.after.words}",
                f"{_fmt_lp(r.before.avg_logprob)} → {_fmt_lp(r.after.avg_logprob)}",
                f"{r.before.uncovered_sound_s:.1f} → {r.after.uncovered_sound_s:.1f}",
                f"{r.before.words_over_nonspeech} → {r.after.words_over_nonspeech}",
                _esc(policy),
            ]
        )
    headers = [
        "chunk",
        "flags before",
        "kept",
        "flags after",
        "words",
        "avg logprob",
        "sound without text s",
        "words over non-speech",
        "retry policy",
    ]
    return "<h2>Repairs</h2>" + _table(headers, rows, set())


def _fmt_lp(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _speakers_section(report: SpeakerReport | None, duration_s: float) -> str:
    if report is None:
        return ""
    colours = speaker_colours(report)
    legend = " ".join(
        f'<span class="flag" style="background:{c}">{_esc(n)}</span>' for n, c in colours.items()
    )
    parts = [
        "<h2>Speakers</h2>",
        "<p class='muted'>Reference lane: where each reference turn's words fall in time (from "
        "the alignment); then one lane per transcript label, coloured by the reference speaker "
        "that label stands for (cpWER's best pairing). Outlined in red: labelled as the wrong "
        f"speaker. {legend}</p>",
        timeline_svg(report, duration_s),
    ]
    if report.speakers:
        rows = [
            [
                _esc(w.speaker),
                str(w.counts.ref_words),
                _pct(w.wer),
                f"{w.counts.substitutions} / {w.counts.deletions} / {w.counts.insertions}",
                _esc(w.label or "none"),
                _pct(w.pair.wer) if w.pair else "–",
            ]
            for w in report.speakers
        ]
        parts.append("<h3>WER per reference speaker</h3>")
        parts.append(
            _table(
                ["speaker", "words", "WER", "S / D / I", "transcript label", "cpWER of the pair"],
                rows,
                {1, 2, 5},
            )
        )
    if report.segments_labelled:
        parts.append(
            f"<h3>Wrong speaker labels: {report.segments_wrong} of {report.segments_labelled} "
            f"segments, {len(report.wrong_turns)} turns</h3>"
        )
        if report.wrong_turns:
            rows = [
                [
                    f"{w.start:.1f}–{w.end:.1f}",
                    _esc(w.label) + (f" → {_esc(w.labelled_as)}" if w.labelled_as else ""),
                    _esc(w.speaker),
                    _esc(w.text),
                ]
                for w in report.wrong_turns
            ]
            parts.append(_table(["time (s)", "labelled", "reference speaker", "text"], rows, set()))
    return "\n".join(parts)


def render_html_report(data: ReportInput) -> str:
    """The whole report as one self-contained HTML page."""
    t, s = data.transcript, data.score
    png = base64.b64encode(timeline_png(data)).decode("ascii")
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        f"<title>podscribe report: {_esc(t.episode_id)}</title><style>{_CSS}</style></head><body>",
        f"<h1>podscribe report: {_esc(t.episode_id)}</h1>",
        "<h2>Summary</h2>",
        _table(["", ""], [[_esc(k), _esc(v)] for k, v in summary_rows(data)], set()),
        "<h2>Timeline</h2>",
        f'<img class="plot" id="timeline" alt="WER per chunk and flags along the episode" '
        f'src="data:image/png;base64,{png}">',
    ]
    alignment = data.alignment
    parts.append(_speakers_section(data.speaker_section, t.duration_s))
    if s is not None and alignment is not None:
        parts.append("<h2>Worst chunks</h2>")
        parts.append(
            "<p class='muted'>Top: reference, bottom: transcript. "
            "<span style='background:#fde2b3'>substituted</span> "
            "<span style='background:#f8c4c4'>deleted</span> "
            "<span style='background:#c9def7'>inserted</span></p>"
        )
        by_index = {c.chunk_index: c for c in s.chunks}
        worst = worst_chunks(s)
        per_segment = segment_error_counts(alignment, t)
        for index in worst:
            c = by_index[index]
            n = c.counts
            parts.append(
                f"<h3>chunk {chunk_number(index)} · {c.start_s:.1f}–{c.end_s:.1f} s · "
                f"WER {_pct(c.wer)} "
                f"(S {n.substitutions}, D {n.deletions}, I {n.insertions} of {n.ref_words})</h3>"
            )
            parts.append(_alignment_html(chunk_alignment(alignment, index)))
            segs = " · ".join(
                f"{seg.start:.1f}–{seg.end:.1f} s: {_pct(n.wer)} ({n.errors} errors)"
                for seg, n in per_segment
                if seg.chunk_index == index
            )
            parts.append(f"<p class='muted'>WER per segment: {_esc(segs)}</p>")
        if not worst:
            parts.append("<p>No chunk has an error.</p>")
        pairs = confusion_pairs(alignment)
        parts.append("<h2>Top confusion pairs (reference → transcript)</h2>")
        parts.append(
            _table(
                ["reference", "transcript", "count"],
                [[_esc(r), _esc(h), str(k)] for r, h, k in pairs],
                {2},
            )
            if pairs
            else "<p>No substitutions.</p>"
        )
    parts.append(_chunks_section(data))
    parts.append(_taken_out_section(data.quality))
    parts.append(_repairs_section(data.quality))
    parts.append("</body></html>")
    return "\n".join(parts)


# --- markdown -----------------------------------------------------------------------------------


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def clean(cell: str) -> str:
        return str(cell).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(clean, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(map(clean, r)) + " |" for r in rows]
    return "\n".join(lines)


def _md_alignment(words: Sequence[AlignedWord]) -> str:
    out = []
    for w in words:
        if w.op == "equal":
            out.append(w.ref or "")
        elif w.op == "substitute":
            out.append(f"~~{w.ref}~~ **{w.hyp}**")
        elif w.op == "delete":
            out.append(f"~~{w.ref}~~")
        else:
            out.append(f"**+{w.hyp}**")
    return " ".join(out)


def _md_speakers(report: SpeakerReport | None) -> list[str]:
    """A short per-speaker table and the count of wrongly labelled turns."""
    if report is None or not report.speakers:
        return []
    rows = [
        (
            w.speaker,
            str(w.counts.ref_words),
            _pct(w.wer),
            w.label or "none",
            _pct(w.pair.wer) if w.pair else "–",
        )
        for w in report.speakers
    ]
    out = [
        "## Speakers",
        "",
        _md_table(["speaker", "words", "WER", "transcript label", "cpWER of the pair"], rows),
        "",
    ]
    if report.segments_labelled:
        out += [
            f"Wrong speaker labels: {report.segments_wrong} of {report.segments_labelled} "
            f"segments ({len(report.wrong_turns)} turns; report.html lists them).",
            "",
        ]
    return out


def render_markdown_report(data: ReportInput) -> str:
    """The report's content as markdown (for a Prefect artifact): tables, no images."""
    t, s, q = data.transcript, data.score, data.quality
    parts = [f"# podscribe report: {t.episode_id}", "", _md_table(["", ""], summary_rows(data)), ""]
    alignment = data.alignment
    parts += _md_speakers(data.speaker_section)
    if s is not None and alignment is not None:
        parts += [
            "## Worst chunks",
            "",
            "~~struck~~: reference word missed or replaced; **bold**: what the transcript "
            "said instead (+ marks an inserted word).",
            "",
        ]
        by_index = {c.chunk_index: c for c in s.chunks}
        for index in worst_chunks(s):
            c = by_index[index]
            parts += [
                f"### chunk {chunk_number(index)} · {c.start_s:.1f}–{c.end_s:.1f} s · "
                f"WER {_pct(c.wer)}",
                "",
                _md_alignment(chunk_alignment(alignment, index)),
                "",
            ]
        pairs = confusion_pairs(alignment)
        if pairs:
            parts += [
                "## Top confusion pairs",
                "",
                _md_table(
                    ["reference", "transcript", "count"], [(r, h, str(k)) for r, h, k in pairs]
                ),
                "",
            ]
    if q is not None:
        wer = {c.chunk_index: c.wer for c in s.chunks} if s else {}
        rows = []
        for sig, f in zip(q.signals, q.flags, strict=True):
            w = wer.get(sig.chunk_index)
            rows.append(
                [
                    str(chunk_number(sig.chunk_index)),
                    f"{sig.start_s:.1f}–{sig.end_s:.1f}",
                    "–" if w is None else f"{w:.1%}",
                    str(sig.words),
                    _fmt_lp(sig.avg_logprob),
                    f"{sig.speech_s:.1f}",
                    f"{sig.music_s:.1f}",
                    f"{sig.uncovered_sound_s:.1f}",
                    ", ".join(f.names) or "–",
                ]
            )
        parts += [
            "## Chunks",
            "",
            _md_table(
                [
                    "chunk",
                    "time (s)",
                    "WER",
                    "words",
                    "avg logprob",
                    "speech s",
                    "music s",
                    "sound without text s",
                    "flags",
                ],
                rows,
            ),
            "",
        ]
        taken_out = taken_out_rows(q)
        if taken_out:
            parts += [
                "## Taken out of the transcript",
                "",
                _md_table(_TAKEN_OUT_HEADERS, taken_out),
                "",
            ]
        if q.repairs:
            parts += [
                "## Repairs",
                "",
                _md_table(
                    ["chunk", "flags before", "kept", "flags after", "words"],
                    [
                        (
                            str(chunk_number(r.chunk_index)),
                            ", ".join(r.flags_before),
                            r.kept,
                            ", ".join(r.flags_after) or "none",
                            f"{r.before.words} → {r.after.words}",
                        )
                        for r in q.repairs
                    ],
                ),
                "",
            ]
    return "\n".join(parts)


# --- files ----------------------------------------------------------------------------------------


def write_report(out_dir: Path, data: ReportInput) -> Path:
    """Render and write ``out_dir/report.html`` atomically."""
    return write_text_atomic(Path(out_dir) / REPORT_NAME, render_html_report(data))


def load_report_input(episode_dir: Path) -> ReportInput:
    """Read what a report needs back from an episode folder (transcript.json and its siblings)."""
    from pipeline.core.transcript import load_transcript

    episode_dir = Path(episode_dir)
    transcript_path = episode_dir / "transcript.json"
    if not transcript_path.exists():
        raise PodscribeError(
            f"no transcript.json in {episode_dir}: run `podscribe transcribe` for this episode"
        )
    transcript = load_transcript(transcript_path)
    score = None
    score_path = episode_dir / "score.json"
    if score_path.exists():
        raw = read_json(score_path).get("score")
        score = score_from_dict(raw) if raw else None
    ref_path = episode_dir / REFERENCE_NAME
    reference_text = ref_path.read_text(encoding="utf-8") if ref_path.exists() else None
    turns_path = episode_dir / REFERENCE_TURNS_NAME
    turns: tuple[SpeakerTurn, ...] = ()
    if reference_text is not None and turns_path.exists():
        turns = tuple(SpeakerTurn(t.get("speaker"), t["text"]) for t in read_json(turns_path))
    quality_path = episode_dir / QUALITY_NAME
    quality = quality_report_from_dict(read_json(quality_path)) if quality_path.exists() else None
    run_path = episode_dir / RUN_NAME
    run = read_json(run_path) if run_path.exists() else {}
    return ReportInput(
        transcript,
        score,
        quality,
        reference_text,
        elapsed_s=run.get("elapsed_s"),
        run_id=run.get("run_id"),
        reference_turns=turns,
    )


def rebuild_report(episode_dir: Path) -> Path:
    """Make ``report.html`` again from the files in an episode folder; return its path."""
    return write_report(episode_dir, load_report_input(episode_dir))


def flags_by_chunk(quality: QualityReport | None) -> dict[int, tuple[str, ...]]:
    """Chunk index → raised flags (only chunks with flags)."""
    if quality is None:
        return {}
    return {f.chunk_index: f.names for f in quality.flags if f.any}


__all__ = [
    "ReportInput",
    "confusion_pairs",
    "flags_by_chunk",
    "load_report_input",
    "rebuild_report",
    "render_html_report",
    "render_markdown_report",
    "summary_rows",
    "timeline_png",
    "worst_chunks",
    "write_report",
]
