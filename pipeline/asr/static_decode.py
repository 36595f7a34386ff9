"""Whisper's text decoder over a static KV cache: on a GPU each decoding step is one CUDA graph.

On a GPU the batched greedy loop of ``pipeline.asr.decode_task`` is bound by the CPU, not the
every token costs about a hundred small kernel launches through whisper's cache hooks (which
grow the cache with ``torch.cat``) and a device-to-host sync to ask whether the batch has
finished. ``StaticDecoder`` keeps the same layers and arithmetic but allocates the self- and
cross-attention caches once, for one batch size and the model's whole text context, and writes
each new key and value in place at the step's position (attention masks the positions not yet
written). Every step then has the same shapes, so on cuda it is captured once as a CUDA graph
and replayed: one launch per token. On a CPU the same code runs eagerly (the tests check it
gives whisper's tokens there).

``greedy_update`` is ``GreedyDecoder.update`` at temperature 0 without its host syncs;
``vocab_logits`` is the decoder's output projection in the layout the CPU runs fastest.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F

# Decoders kept per process (each holds its caches, and on cuda its graph): one per batch size.
MAX_KEPT = 4


class StaticDecoder:
    """Whisper's ``TextDecoder.forward`` for ``batch`` rows over caches allocated once."""

    def __init__(
        self, model: Any, batch: int, dtype: torch.dtype, device: torch.device, use_graph: bool
    ) -> None:
        dims = model.dims
        self.model = model
        self.batch = batch
        self.dtype = dtype
        self.n_head = dims.n_text_head
        self.n_ctx = dims.n_text_ctx
        layers, state = dims.n_text_layer, dims.n_text_state
        self.self_k = torch.zeros(layers, batch, self.n_ctx, state, dtype=dtype, device=device)
        self.self_v = torch.zeros_like(self.self_k)
        self.cross_k = torch.zeros(
            layers, batch, dims.n_audio_ctx, state, dtype=dtype, device=device
        )
        self.cross_v = torch.zeros_like(self.cross_k)
        # The step's inputs: the newest token of each row and its position.
        self.token = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.position = torch.zeros(1, dtype=torch.long, device=device)
        self.positions = torch.arange(self.n_ctx, device=device)
        self.use_graph = use_graph and torch.device(device).type == "cuda"
        self.graph: Any = None
        self.logits: torch.Tensor | None = None  # the graph's output buffer
        self.lock = threading.Lock()  # one decoding loop at a time uses the caches

    # -- the first pass: prompt and SOT sequence, eagerly -------------------------------

    def start(self, tokens: torch.Tensor, audio_features: torch.Tensor) -> torch.Tensor:
        """Fill the caches from the initial tokens; returns their logits (batch, n, vocab)."""
        decoder = self.model.decoder
        n = tokens.shape[-1]
        for i, block in enumerate(decoder.blocks):
            self.cross_k[i].copy_(block.cross_attn.key(audio_features))
            self.cross_v[i].copy_(block.cross_attn.value(audio_features))
        x = decoder.token_embedding(tokens) + decoder.positional_embedding[:n]
        x = x.to(self.dtype)
        for i, block in enumerate(decoder.blocks):
            h = block.attn_ln(x)
            q, k, v = block.attn.query(h), block.attn.key(h), block.attn.value(h)
            self.self_k[i, :, :n] = k
            self.self_v[i, :, :n] = v
            x = x + block.attn.out(attend(q, k, v, self.n_head, causal=True))
            x = self._cross_and_mlp(block, i, x)
        return self._logits(x)

    # -- one token per row ----------------------------------------------------------------

    def step(self, last_tokens: torch.Tensor, position: int) -> torch.Tensor:
        """Logits (batch, vocab) after ``last_tokens`` (batch,) at ``position``.

        The returned tensor is overwritten by the next step.
        """
        self.token.copy_(last_tokens[:, None])
        self.position.fill_(position)
        if not self.use_graph:
            return self._step()
        if self.graph is None:
            self._capture()
        self.graph.replay()
        assert self.logits is not None
        return self.logits

    def _step(self) -> torch.Tensor:
        decoder = self.model.decoder
        x = decoder.token_embedding(self.token) + decoder.positional_embedding.index_select(
            0, self.position
        )
        x = x.to(self.dtype)
        written = (self.positions <= self.position).view(1, 1, 1, -1)
        for i, block in enumerate(decoder.blocks):
            h = block.attn_ln(x)
            q = block.attn.query(h)
            self.self_k[i].index_copy_(1, self.position, block.attn.key(h).to(self.dtype))
            self.self_v[i].index_copy_(1, self.position, block.attn.value(h).to(self.dtype))
            a = attend(q, self.self_k[i], self.self_v[i], self.n_head, mask=written)
            x = x + block.attn.out(a)
            x = self._cross_and_mlp(block, i, x)
        return self._logits(x)[:, 0]

    def _capture(self) -> None:
        # Warm up on a side stream (cuBLAS handles, workspaces), then record one step. The
        # warm-up writes a key and value at the current position, which the step rewrites.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.logits = self._step()
        self.graph = graph

    # -- shared parts ---------------------------------------------------------------------

    def _cross_and_mlp(self, block: Any, i: int, x: torch.Tensor) -> torch.Tensor:
        h = block.cross_attn_ln(x)
        q = block.cross_attn.query(h)
        x = x + block.cross_attn.out(attend(q, self.cross_k[i], self.cross_v[i], self.n_head))
        return x + block.mlp(block.mlp_ln(x))

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        decoder = self.model.decoder
        return vocab_logits(decoder.ln(x), decoder.token_embedding.weight)


def text_decoder_forward(
    decoder: Any, tokens: torch.Tensor, audio_features: torch.Tensor, kv_cache: dict | None = None
) -> torch.Tensor:
    """Whisper's ``TextDecoder.forward`` (through its cache hooks) with ``vocab_logits``."""
    offset = next(iter(kv_cache.values())).shape[1] if kv_cache else 0
    x = (
        decoder.token_embedding(tokens)
        + decoder.positional_embedding[offset : offset + tokens.shape[-1]]
    )
    x = x.to(audio_features.dtype)
    for block in decoder.blocks:
        x = block(x, audio_features, mask=decoder.mask, kv_cache=kv_cache)
    return vocab_logits(decoder.ln(x), decoder.token_embedding.weight)


def vocab_logits(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Whisper's output projection ``x @ weight.T`` as float32 logits, (..., n_vocab).

    On the CPU it is computed as ``weight @ x.T``: the same products, but MKL runs that
    layout 1.5-3x faster for the few rows of a decoding step (one pass over the 51864 x 384
    embedding, ~10 ms for 8 rows on this 2-core AVX2 machine instead of ~30 ms: see
    scripts/vocab_projection_bench.py), which made it the larger half of every batched step.
    Sums may differ from the other layout in the last bit; elsewhere (cuda) whisper's
    expression is kept.
    """
    weight = weight.to(x.dtype)
    if x.device.type != "cpu":
        return (x @ torch.transpose(weight, 0, 1)).float()
    rows = x.reshape(-1, x.shape[-1])
    out = torch.mm(weight, rows.t()).t().contiguous()
    return out.reshape(*x.shape[:-1], weight.shape[0]).float()


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    n_head: int,
    *,
    causal: bool = False,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Whisper's ``qkv_attention`` (its SDPA branch): (batch, ctx, state) in and out."""
    n_ctx = q.shape[1]
    q = q.view(*q.shape[:2], n_head, -1).permute(0, 2, 1, 3)
    k = k.view(*k.shape[:2], n_head, -1).permute(0, 2, 1, 3)
    v = v.view(*v.shape[:2], n_head, -1).permute(0, 2, 1, 3)
    a = F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=causal and n_ctx > 1 and mask is None
    )
    return a.permute(0, 2, 1, 3).flatten(start_dim=2)


def greedy_update(
    tokens: torch.Tensor, logits: torch.Tensor, sum_logprobs: torch.Tensor, eot: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``GreedyDecoder.update`` at temperature 0, with no host sync: returns the tokens and
    a device bool that says whether every row has reached EOT."""
    next_tokens = logits.argmax(dim=-1)
    logprobs = F.log_softmax(logits.float(), dim=-1)
    current = logprobs.gather(1, next_tokens[:, None])[:, 0]
    live = tokens[:, -1] != eot
    sum_logprobs += current * live
    next_tokens = torch.where(live, next_tokens, torch.full_like(next_tokens, eot))
    tokens = torch.cat([tokens, next_tokens[:, None]], dim=-1)
    return tokens, (next_tokens == eot).all()


_KEPT: OrderedDict[tuple[int, int, torch.dtype, str, bool], tuple[Any, StaticDecoder]] = (
    OrderedDict()
)
_LOCK = threading.Lock()


def static_decoder(
    model: Any, batch: int, dtype: torch.dtype, device: torch.device, use_graph: bool
) -> StaticDecoder:
    """The process's decoder for this model and batch size (made, and captured, once)."""
    key = (id(model), batch, dtype, str(device), use_graph)
    with _LOCK:
        held = _KEPT.get(key)
        if held is not None and held[0] is model:
            _KEPT.move_to_end(key)
            return held[1]
        decoder = StaticDecoder(model, batch, dtype, torch.device(device), use_graph)
        _KEPT[key] = (model, decoder)
        while len(_KEPT) > MAX_KEPT:
            _KEPT.popitem(last=False)
        return decoder
