"""Time whisper's output projection ``x @ W.T`` against ``W @ x.T`` (``vocab_logits``) on this CPU.

W is tiny.en's token embedding shape (51864 x 384), x a decoding step's rows; ms per call:

    .venv/bin/python scripts/vocab_projection_bench.py [--rows 1 8 12 16]
"""

from __future__ import annotations

import argparse
import time

import torch

from pipeline.asr.static_decode import vocab_logits


def per_call_ms(fn, repeat: int = 40) -> float:
    fn()
    fn()
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    return 1000 * (time.perf_counter() - started) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8, 12, 16])
    args = parser.parse_args()
    weight = torch.randn(51864, 384)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for rows in args.rows:
        x = torch.randn(rows, 1, 384)
        whisper_ms = per_call_ms(lambda: (x @ torch.transpose(weight, 0, 1)).float())  # noqa: B023
        ours_ms = per_call_ms(lambda: vocab_logits(x, weight))  # noqa: B023
        print(f"{rows:3d} rows: x @ W.T {whisper_ms:6.1f} ms   vocab_logits {ours_ms:6.1f} ms")


if __name__ == "__main__":
    main()
