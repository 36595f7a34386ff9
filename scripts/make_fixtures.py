"""Make the small audio fixtures the tests use (espeak-ng + ffmpeg); the demo episodes are
real speech, made by scripts/make_demo.py.

Run from the repository root: ``python scripts/make_fixtures.py``. The outputs are committed, so
tests never need espeak-ng; this script documents exactly how they were made.

Outputs:
- tests/fixtures/speech.ogg + speech.txt: ~6 s, one voice, two sentences.
- tests/fixtures/episode.mp3 + episode.txt: ~48 s, two voices, sentences separated by
  silences of different lengths, opened by a 2 s tone (a "jingle"): several 30 s chunks.
- tests/fixtures/longform.mp3 + longform.txt: ~20 s, a long sentence (to be cut in the middle)
  and a short one, 0.25 s apart as in long recordings rebuilt from sentence clips, then 0.5 s
  of near-silence (faint noise at about -60 dBFS): a chunk's quiet tail.
- tests/fixtures/fillers.mp3 + fillers.txt: ~9 s, one voice saying "you know" once as a
  filler and once as the verb ("Do you know what ..."), for the clean style.
- tests/fixtures/parts.mp3 + parts.txt + parts.tsv: ~17 s, two voices taking turns (one turn a
  lone "Right!"), 1 s of silence first and 0.7-1.5 s between turns; parts.tsv says where each
  turn starts and ends (as ../shared/eval/dev-episode/parts.tsv does) and parts.txt is the
  reference with "Host:"/"Guest:" labels, for word timings and speakers.

- tests/fixtures/dialogue.mp3 + dialogue.txt + dialogue.rttm: ~40 s, two clearly different
  espeak-ng voices (a male US and a female British variant) taking turns, one answer a short
  "Right." and one turn taken after only 0.15 s: ``Host:``/``Guest:`` lines and the true turns
  (RTTM, from each sentence's own length) for the diarization tests.

- tests/fixtures/intro.mp3 + intro.txt: ~30 s, the dialogue's two voices introducing themselves
  and each other by name ("I'm Alice", "Thanks, Alice. I'm Bob", "Bob, ..."): naming the
  diarizer's speakers after a feed's <podcast:person> list, with no labelled reference.

``python scripts/make_fixtures.py longform`` makes only the named outputs (speech, episode,
longform, fillers, dialogue, parts, intro); no name: all of them.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import wave
from collections.abc import Sequence
from pathlib import Path

import imageio_ffmpeg

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
RATE = 16000

SPEECH = [
    ("en-us", "The quick brown fox jumps over the lazy dog."),
    ("en-us", "Podcasts are easy to listen to on a long walk."),
]

EPISODE = [
    ("en-us", "Welcome to the show. Today we talk about rivers, mountains and the weather.", 0.8),
    ("en-gb", "Thank you for having me. I have studied rivers for twenty years.", 1.2),
    ("en-us", "What surprised you most when you started this work?", 0.5),
    ("en-gb", "How quickly a small stream can change its course after a storm.", 1.5),
    ("en-us", "Is that something people living nearby should worry about?", 0.6),
    ("en-gb", "They should plan for it. Maps of flood plains get old very fast.", 2.0),
    ("en-us", "Let us take a short break and come back to the mountains.", 0.9),
    ("en-gb", "Mountains make their own weather, which is why hikers get caught out.", 1.0),
    ("en-us", "That is all for today. Thank you for listening to the show.", 0.0),
]

LONGFORM = [
    (
        "en-us",
        "The committee reviewed the budget for the new library, and after a long discussion "
        "about the roof, the windows and the parking spaces, it decided to start building in "
        "the spring of next year.",
        0.25,
    ),
    ("en-gb", "Thank you all for coming tonight.", 0.0),
]
TAIL_S = 0.5  # near-silence after the last sentence

# Fillers a clean transcript leaves out, and "you know" as the verb, which it keeps.
FILLERS = [
    ("en-us", "As I look at this year, you know, we will make the product simpler.", 0.5),
    ("en-us", "Do you know what the answer is? It is a faster and smaller team.", 0.5),
]

DIALOGUE_VOICES = {"Host": "en-us+m3", "Guest": "en-gb+f3"}
DIALOGUE = [  # (speaker, text, pause after, seconds)
    ("Host", "Welcome back to the show. Today my guest is a river scientist.", 0.6),
    ("Guest", "Thank you for having me. I have studied rivers for twenty years.", 0.7),
    ("Host", "What surprised you most when you started this work?", 0.5),
    ("Guest", "How quickly a small stream can change its course after a storm.", 0.4),
    ("Host", "So a map of a flood plain gets old very fast.", 0.3),
    ("Guest", "Right.", 0.6),
    ("Host", "And what should people who live near a river do about it?", 0.15),
    ("Guest", "They should plan for floods, and ask the town for new maps every year.", 0.7),
    ("Host", "That is all for today. Thank you for listening to the show.", 0.0),
]

# Names tiny.en writes as they are spelt, said by the dialogue's voices (Alice: en-us+m3).
INTRO_VOICES = {"Alice": "en-us+m3", "Bob": "en-gb+f3"}
INTRO = [  # (speaker, text, pause after, seconds)
    (
        "Alice",
        "Hello and welcome to the garden show, where we talk about vegetables. I'm Alice.",
        0.6,
    ),
    ("Bob", "Thanks, Alice. I'm Bob, and I am glad to be here with you today.", 0.7),
    ("Alice", "Bob, what did you plant in your garden this spring, and why?", 0.5),
    ("Bob", "Mostly tomatoes and beans, and a few long rows of potatoes for the winter.", 0.6),
    ("Alice", "And how did the tomatoes do in all that rain we had in June?", 0.5),
    ("Bob", "They did very well, but the beans were slow to start and the snails ate some.", 0.6),
    ("Alice", "That is all for today. Thank you for listening to the garden show.", 0.0),
]

PARTS_LEAD_S = 1.0  # silence before the first turn
PARTS = [  # (speaker, voice, text, silence after)
    ("Host", "en-us", "Good morning and welcome back to the garden hour.", 1.0),
    ("Guest", "en-gb", "Thank you. The tomatoes did very well this summer.", 0.7),
    ("Host", "en-us", "Right!", 1.5),
    ("Guest", "en-gb", "Water them early in the day, never at night.", 0.0),
]


def ffmpeg(*args: str) -> None:
    exe = imageio_ffmpeg.get_ffmpeg_exe()
    subprocess.run([exe, "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def speak(voice: str, text: str, out: Path) -> None:
    subprocess.run(["espeak-ng", "-v", voice, "-s", "155", "-w", str(out), text], check=True)


def build(parts: list[tuple[str, str, float]], out: Path, jingle_s: float = 0.0) -> str:
    """Concatenate spoken sentences and silences (and an optional tone) into ``out``."""
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pieces: list[Path] = []
        if jingle_s:
            tone = tmp / "tone.wav"
            ffmpeg(
                "-f",
                "lavfi",
                "-i",
                f"sine=frequency=660:duration={jingle_s}:sample_rate={RATE}",
                "-af",
                "volume=0.3",
                "-ac",
                "1",
                tone.as_posix(),
            )
            pieces.append(tone)
            pieces.append(silence(tmp, 0.7))
        pieces += spoken(tmp, 0.0, parts)[0]
        concat(tmp, pieces, out)
    return " ".join(text for _, text, _ in parts) + "\n"


def spoken(
    tmp: Path, lead_s: float, lines: Sequence[tuple[str, str, float]]
) -> tuple[list[Path], list[tuple[float, float]]]:
    """(voice, text, pause after) lines spoken one after another, after ``lead_s`` of
    silence: the WAV pieces in order, and where each line starts and how long it is."""
    pieces = [silence(tmp, lead_s)] if lead_s else []
    spans: list[tuple[float, float]] = []
    t = lead_s
    for i, (voice, text, pause) in enumerate(lines):
        raw, wav = tmp / f"r{i}.wav", tmp / f"w{i}.wav"
        speak(voice, text, raw)
        ffmpeg("-i", raw.as_posix(), "-ar", str(RATE), "-ac", "1", wav.as_posix())
        length = wav_seconds(wav)
        spans.append((t, length))
        pieces.append(wav)
        t += length
        if pause:
            pieces.append(silence(tmp, pause))
            t += pause
    return pieces, spans


def concat(tmp: Path, pieces: Sequence[Path], out: Path) -> None:
    """``pieces`` one after another into ``out``, 16 kHz mono; MP3 or Opus by its suffix."""
    listing = tmp / "list.txt"
    listing.write_text("".join(f"file '{p.as_posix()}'\n" for p in pieces))
    args = ["-f", "concat", "-safe", "0", "-i", listing.as_posix(), "-ar", str(RATE), "-ac", "1"]
    if out.suffix == ".mp3":
        args += ["-c:a", "libmp3lame", "-b:a", "32k"]
    elif out.suffix == ".ogg":
        args += ["-c:a", "libopus", "-b:a", "24k"]
    ffmpeg(*args, out.as_posix())


def silence(tmp: Path, seconds: float) -> Path:
    out = tmp / f"sil{seconds}.wav"
    if not out.exists():
        ffmpeg(
            "-f", "lavfi", "-i", f"anullsrc=r={RATE}:cl=mono", "-t", str(seconds), out.as_posix()
        )
    return out


def faint_tail(tmp: Path, seconds: float) -> Path:
    """Near-silence: white noise at about -60 dBFS (room tone at the end of a clip)."""
    out = tmp / f"faint{seconds}.wav"
    ffmpeg(
        "-f", "lavfi", "-i", f"anoisesrc=r={RATE}:a=0.001:c=white:s=7", "-t", str(seconds),
        out.as_posix(),
    )  # fmt: skip
    return out


def build_longform(out: Path) -> str:
    """LONGFORM spoken, then TAIL_S of near-silence, into ``out``."""
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        speech = tmp / "speech.wav"
        text = build(LONGFORM, speech)
        concat(tmp, [speech, faint_tail(tmp, TAIL_S)], out)
    return text


def wav_seconds(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def build_dialogue(
    out: Path,
    lines: list[tuple[str, str, float]] = DIALOGUE,
    voices: dict[str, str] = DIALOGUE_VOICES,
) -> tuple[str, str]:
    """``lines`` (DIALOGUE) spoken into ``out`` by ``voices``; returns its "Name: text"
    reference and its RTTM."""
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pieces, spans = spoken(tmp, 0.5, [(voices[sp], text, pause) for sp, text, pause in lines])
        concat(tmp, pieces, out)
    rttm = [
        f"SPEAKER dialogue 1 {t:.3f} {length:.3f} <NA> <NA> {speaker} <NA> <NA>\n"
        for (speaker, _, _), (t, length) in zip(lines, spans, strict=True)
    ]
    text = "".join(f"{speaker}: {line}\n" for speaker, line, _ in lines)
    return text, "".join(rttm)


def build_parts(out: Path) -> tuple[str, str]:
    """PARTS spoken into ``out`` (mp3); returns (the labelled reference, parts.tsv)."""
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pieces, spans = spoken(tmp, PARTS_LEAD_S, [(v, text, p) for _, v, text, p in PARTS])
        concat(tmp, pieces, out)
    rows = ["line\tstart_s\tend_s\tspeaker_source"] + [
        f"{i + 1}\t{t:.3f}\t{t + n:.3f}\t{speaker} (espeak-ng {voice})"
        for i, ((speaker, voice, _, _), (t, n)) in enumerate(zip(PARTS, spans, strict=True))
    ]
    reference = "".join(f"{speaker}: {text}\n" for speaker, _v, text, _p in PARTS)
    return reference, "\n".join(rows) + "\n"


def main(names: list[str]) -> None:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    wanted = set(names) or {
        "speech", "episode", "longform", "fillers", "dialogue", "parts", "intro"
    }  # fmt: skip
    if "speech" in wanted:
        speech = build([(v, t, 0.3) for v, t in SPEECH], FIXTURES / "speech.ogg")
        (FIXTURES / "speech.txt").write_text(speech)
    if "episode" in wanted:
        episode = build(EPISODE, FIXTURES / "episode.mp3", jingle_s=2.0)
        (FIXTURES / "episode.txt").write_text(episode)
    if "longform" in wanted:
        (FIXTURES / "longform.txt").write_text(build_longform(FIXTURES / "longform.mp3"))
    if "fillers" in wanted:
        (FIXTURES / "fillers.txt").write_text(build(FILLERS, FIXTURES / "fillers.mp3"))
    if "dialogue" in wanted:
        text, rttm = build_dialogue(FIXTURES / "dialogue.mp3")
        (FIXTURES / "dialogue.txt").write_text(text)
        (FIXTURES / "dialogue.rttm").write_text(rttm)
    if "intro" in wanted:
        text, _ = build_dialogue(FIXTURES / "intro.mp3", INTRO, INTRO_VOICES)
        # plain text: a labelled reference would name the speakers before the feed's persons
        (FIXTURES / "intro.txt").write_text(
            " ".join(line.split(": ", 1)[1] for line in text.splitlines()) + "\n"
        )
    if "parts" in wanted:
        reference, tsv = build_parts(FIXTURES / "parts.mp3")
        (FIXTURES / "parts.txt").write_text(reference)
        (FIXTURES / "parts.tsv").write_text(tsv)


if __name__ == "__main__":
    main(sys.argv[1:])
