"""Where the transcription stage's time goes: encoder, decoder steps and the rest.

Cuts an episode as the pipeline does, warms up, then transcribes every chunk in batches with
timers around whisper's ``AudioEncoder.forward`` and the batched decoder's forward:

    .venv/bin/python scripts/stage_profile.py SOURCE [--batch-size 8] [--work /tmp/stage]
"""

from __future__ import annotations

import argparse
import collections
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--work", type=Path, default=Path("/tmp/stage"))
    args = parser.parse_args()

    import whisper.model

    import pipeline.asr.batch as batch
    import pipeline.asr.decode_task as decode_task
    from pipeline.asr.loading import load_model
    from pipeline.asr.options import TranscribeOptions
    from pipeline.audio.chunk import ChunkOptions
    from pipeline.episode import prepare_episode

    seconds: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()

    def timed(name, fn):
        def wrapper(*a, **k):
            started = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                seconds[name] += time.perf_counter() - started
                calls[name] += 1

        return wrapper

    whisper.model.AudioEncoder.forward = timed("encoder", whisper.model.AudioEncoder.forward)
    decode_task.text_decoder_forward = timed("decoder", decode_task.text_decoder_forward)

    manifest = prepare_episode(
        args.source,
        "stage-profile",
        args.work / "audio",
        ChunkOptions(max_chunk_s=30.0, min_chunk_s=5.0, search_s=10.0),
    )
    options = TranscribeOptions()
    loaded = load_model(options)
    batch.transcribe_chunks_batched(manifest.chunks[:2], options, batch_size=2, loaded=loaded)
    seconds.clear()
    calls.clear()
    started = time.perf_counter()
    batch.transcribe_chunks_batched(
        manifest.chunks, options, batch_size=args.batch_size, loaded=loaded
    )
    total = time.perf_counter() - started
    print(f"{len(manifest.chunks)} chunks, batch {args.batch_size}: stage {total:.2f} s")
    for name in ("encoder", "decoder"):
        print(f"  {name}: {seconds[name]:.2f} s in {calls[name]} calls")
    print(f"  rest: {total - sum(seconds.values()):.2f} s")


if __name__ == "__main__":
    main()
