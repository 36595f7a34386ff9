"""Pack an openai-whisper checkpoint small enough to carry to a lent GPU machine, and unpack it.

The device tool carries at most 64 MiB of ignored files; tiny.en's fp16 checkpoint is 75.6 MB
and plain xz barely shrinks it. Splitting every fp16 value into its high bytes (sign, exponent,
top mantissa bits: very repetitive) and low bytes before xz makes it fit, losslessly: the
unpacked tensors are bit-for-bit the packed ones (checked on unpack).

    .venv/bin/python scripts/pack_checkpoint.py pack tiny.en gpu/tiny.en.pt.xz
    .venv/bin/python scripts/pack_checkpoint.py unpack gpu/tiny.en.pt.xz "$CACHE/tiny.en.pt"
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import struct
import sys
from pathlib import Path

import numpy as np
import torch

MAGIC = b"PSCK1"


def _tensor_digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def pack(model: str, out: Path) -> None:
    """Write ``model`` (a name podscribe resolves, or a .pt path) as a byte-plane xz file."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pipeline.asr.weights import resolve_model

    info = resolve_model(model)
    ckpt = torch.load(info.path, map_location="cpu", weights_only=True)
    state = ckpt["model_state_dict"]
    names = sorted(state)
    raw = b"".join(state[n].contiguous().view(torch.uint8).numpy().tobytes() for n in names)
    tensors = [
        {
            "name": n,
            "dtype": str(state[n].dtype).removeprefix("torch."),
            "shape": list(state[n].shape),
        }
        for n in names
    ]
    header = {
        "dims": ckpt["dims"],
        "alignment_heads": ckpt.get("alignment_heads"),
        "tensors": tensors,
        "tensor_sha256": _tensor_digest(state),
        "source": info.source,
        "name": info.name,
    }
    data = np.frombuffer(raw, dtype=np.uint8)
    if len(data) % 2:
        raise SystemExit("odd byte count: only 16-bit checkpoints are packed this way")
    planes = data.reshape(-1, 2).T.copy()  # [low bytes..., high bytes...]
    head = json.dumps(header).encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    with lzma.open(out, "wb", preset=9 | lzma.PRESET_EXTREME) as f:
        f.write(MAGIC + struct.pack("<Q", len(head)) + head)
        f.write(planes.tobytes())
    print(
        f"{info.path} ({info.path.stat().st_size / 1e6:.1f} MB) -> {out} "
        f"({out.stat().st_size / 1e6:.1f} MB)"
    )


def unpack(packed: Path, out_pt: Path) -> None:
    """Rebuild the checkpoint as an openai-whisper .pt file; checks the tensors' digest."""
    with lzma.open(packed, "rb") as f:
        blob = f.read()
    if not blob.startswith(MAGIC):
        raise SystemExit(f"{packed} is not a packed checkpoint")
    (n,) = struct.unpack("<Q", blob[len(MAGIC) : len(MAGIC) + 8])
    start = len(MAGIC) + 8
    header = json.loads(blob[start : start + n])
    planes = np.frombuffer(blob[start + n :], dtype=np.uint8).reshape(2, -1)
    raw = planes.T.copy().reshape(-1)
    state, offset = {}, 0
    for t in header["tensors"]:
        dtype = getattr(torch, t["dtype"])
        count = int(np.prod(t["shape"])) if t["shape"] else 1
        size = count * torch.empty((), dtype=dtype).element_size()
        chunk = torch.from_numpy(raw[offset : offset + size].copy())
        state[t["name"]] = chunk.view(dtype).reshape(t["shape"])
        offset += size
    if _tensor_digest(state) != header["tensor_sha256"]:
        raise SystemExit("unpacked tensors do not match the packed digest")
    ckpt = {"dims": header["dims"], "model_state_dict": state}
    if header.get("alignment_heads"):
        ckpt["alignment_heads"] = header["alignment_heads"]
    out_pt.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_pt.with_suffix(".part")
    torch.save(ckpt, tmp)
    tmp.replace(out_pt)
    print(
        f"{packed} -> {out_pt} (tensors sha256 {header['tensor_sha256'][:12]}, "
        f"from {header['source']})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("model", help="model name (tiny.en) or .pt path")
    p.add_argument("out", type=Path)
    u = sub.add_parser("unpack")
    u.add_argument("packed", type=Path)
    u.add_argument("out_pt", type=Path)
    args = parser.parse_args()
    if args.cmd == "pack":
        pack(args.model, args.out)
    else:
        unpack(args.packed, args.out_pt)


if __name__ == "__main__":
    main()
