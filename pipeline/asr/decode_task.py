"""A batched Whisper ``DecodingTask``: several 30 s log-mel windows per encoder and decoder pass.

Every window in a batch starts from the same SOT sequence, so none is padded: one encoder call,
one decoder call per token for the whole batch, over Whisper's own ``DecodingTask`` and its KV
cache. Rows with prompts of different lengths (``condition_chunks``) are left-padded and the
padding masked (``RaggedInference``). Two changes make batching
pay on a CPU, where the per-token Python work dominates:

- ``ApplyTimestampRules`` loops over the batch in Python at every token; ``apply_timestamp_rules``
  does the same masking with a few tensor ops (tests check it gives identical logits);
- a greedy decode drops sequences that reached EOT from the batch (and from the KV cache), so a
  long window does not drag finished ones through every step.

``ContinueInWindow`` holds EOT back in a window whose chunk's speech goes on. On cuda the
greedy steps run over a static KV cache, one CUDA graph replay per token
(``pipeline.asr.static_decode``). ``decode_batch`` is the entry point; ``pipeline.asr.batch``
schedules chunk windows onto it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from whisper.decoding import (
    ApplyTimestampRules,
    DecodingOptions,
    DecodingResult,
    DecodingTask,
    GreedyDecoder,
    LogitFilter,
    PyTorchInference,
    SuppressTokens,
)
from whisper.tokenizer import Tokenizer

from pipeline.asr.static_decode import (
    attend,
    greedy_update,
    static_decoder,
    text_decoder_forward,
    vocab_logits,
)
from pipeline.core.errors import TranscriptionError

# The static (GPU) loop asks whether every row has finished once per this many tokens.
SYNC_EVERY = 8

# --------------------------------------------------------------------------------------------
# Timestamp rules, vectorised


def apply_timestamp_rules(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    *,
    sample_begin: int,
    timestamp_begin: int,
    eot: int,
    no_timestamps: int | None,
    max_initial_timestamp_index: int | None,
) -> None:
    """Whisper's ``ApplyTimestampRules.apply`` for a whole batch at once, in place.

    Same rules, row by row: timestamps come in pairs except right before EOT; they never
    decrease and each segment has a nonzero length; the first token is a timestamp no later
    than ``max_initial_timestamp_index``; and when the timestamps together are likelier than
    any text token, a timestamp must come next.
    """
    neg_inf = -math.inf
    if no_timestamps is not None:
        logits[:, no_timestamps] = neg_inf
    sampled = tokens[:, sample_begin:]
    n_rows, n_sampled = sampled.shape
    cols = torch.arange(logits.shape[-1], device=logits.device)
    if n_sampled > 0:
        is_ts = sampled >= timestamp_begin
        last_ts = is_ts[:, -1]
        penult_ts = is_ts[:, -2] if n_sampled >= 2 else torch.ones_like(last_ts)
        # After a pair (or a lone opening timestamp) text must follow; after text+timestamp,
        # another timestamp or EOT must.
        no_ts = (last_ts & penult_ts)[:, None] & (cols >= timestamp_begin)[None, :]
        no_text = (last_ts & ~penult_ts)[:, None] & (cols < eot)[None, :]
        # The last timestamp sampled so far: timestamps never decrease, so it bounds the next.
        has_ts = is_ts.any(dim=1)
        positions = torch.arange(n_sampled, device=tokens.device).expand(n_rows, -1)
        last_pos = torch.where(is_ts, positions, -1).amax(dim=1).clamp(min=0)
        last_value = sampled.gather(1, last_pos[:, None])[:, 0]
        upper = last_value + (~(last_ts & ~penult_ts)).long()
        below = (cols[None, :] >= timestamp_begin) & (cols[None, :] < upper[:, None])
        below &= has_ts[:, None]
        logits.masked_fill_(no_ts | no_text | below, neg_inf)
    else:
        # The first sampled token must be a timestamp, and an early one.
        logits[:, :timestamp_begin] = neg_inf
        if max_initial_timestamp_index is not None:
            logits[:, timestamp_begin + max_initial_timestamp_index + 1 :] = neg_inf
    logprobs = F.log_softmax(logits.float(), dim=-1)
    timestamp_logprob = logprobs[:, timestamp_begin:].logsumexp(dim=-1)
    max_text_logprob = logprobs[:, :timestamp_begin].max(dim=-1).values
    force_ts = timestamp_logprob > max_text_logprob
    logits.masked_fill_(force_ts[:, None] & (cols < timestamp_begin)[None, :], neg_inf)


class VectorTimestampRules(LogitFilter):
    """Drop-in replacement for whisper's ``ApplyTimestampRules`` (same constructor)."""

    def __init__(
        self, tokenizer: Tokenizer, sample_begin: int, max_initial_timestamp_index: int | None
    ) -> None:
        self.tokenizer = tokenizer
        self.sample_begin = sample_begin
        self.max_initial_timestamp_index = max_initial_timestamp_index

    def apply(self, logits: torch.Tensor, tokens: torch.Tensor) -> None:
        apply_timestamp_rules(
            logits,
            tokens,
            sample_begin=self.sample_begin,
            timestamp_begin=self.tokenizer.timestamp_begin,
            eot=self.tokenizer.eot,
            no_timestamps=self.tokenizer.no_timestamps,
            max_initial_timestamp_index=self.max_initial_timestamp_index,
        )


# --------------------------------------------------------------------------------------------
# A DecodingTask for batches


class ContinueInWindow(LogitFilter):
    """No EOT right after a timestamp pair that lies before a row's limit.

    Whisper ends a window on a pair (the last segment's end, then the next one's start) when it
    takes that next segment to run past the window; ``transcribe`` then encodes a new window
    from the start. A chunk of one window is all in view, so when its speech goes on
    after the pair (``limits``: per row, ``pipeline.asr.options.continue_limit``), that
    segment is in view: text must follow, as after any pair, in this window.
    """

    def __init__(
        self, sample_begin: int, timestamp_begin: int, eot: int, limits: Sequence[int]
    ) -> None:
        self.sample_begin = sample_begin
        self.timestamp_begin = timestamp_begin
        self.eot = eot
        self.limits = torch.tensor(list(limits), dtype=torch.long)

    def keep(self, rows: torch.Tensor) -> None:
        """Follow the batch when finished rows are dropped."""
        self.limits = self.limits[rows.to(self.limits.device)]

    def apply(self, logits: torch.Tensor, tokens: torch.Tensor) -> None:
        sampled = tokens[:, self.sample_begin :]
        if sampled.shape[1] < 2:
            return
        if self.limits.device != logits.device:
            self.limits = self.limits.to(logits.device)
        limits = self.limits
        if len(limits) != logits.shape[0]:  # beams: n_group rows per window
            limits = limits.repeat_interleave(logits.shape[0] // len(limits))
        tb = self.timestamp_begin
        pair = (sampled[:, -1] >= tb) & (sampled[:, -2] >= tb)
        logits[:, self.eot].masked_fill_(pair & (sampled[:, -1] - tb < limits), -math.inf)


class DeviceSuppressTokens(LogitFilter):
    """Whisper's ``SuppressTokens`` with its token list kept on the logits' device: indexing
    with a Python list copies it to the GPU, and waits for the GPU, at every token."""

    def __init__(self, suppress_tokens: Sequence[int]) -> None:
        self.suppress_tokens = list(suppress_tokens)
        self._index: dict[torch.device, torch.Tensor] = {}

    def apply(self, logits: torch.Tensor, tokens: torch.Tensor) -> None:
        index = self._index.get(logits.device)
        if index is None:
            index = self._index[logits.device] = torch.tensor(
                self.suppress_tokens, dtype=torch.long, device=logits.device
            )
        logits.index_fill_(1, index, -math.inf)


def _vectorised(logit_filter: LogitFilter) -> LogitFilter:
    if isinstance(logit_filter, ApplyTimestampRules):
        return VectorTimestampRules(
            logit_filter.tokenizer,
            logit_filter.sample_begin,
            logit_filter.max_initial_timestamp_index,
        )
    if isinstance(logit_filter, SuppressTokens):
        return DeviceSuppressTokens(logit_filter.suppress_tokens)
    return logit_filter


class BatchInference(PyTorchInference):
    """Whisper's ``PyTorchInference`` with the output projection of ``vocab_logits``."""

    kv_cache: dict[Any, torch.Tensor]
    hooks: list[Any]

    def logits(self, tokens: torch.Tensor, audio_features: torch.Tensor) -> torch.Tensor:
        if not self.kv_cache:
            self.kv_cache, self.hooks = self.model.install_kv_cache_hooks()
        if tokens.shape[-1] > self.initial_token_length:
            tokens = tokens[:, -1:]  # as whisper: only the newest token after the first pass
        return text_decoder_forward(self.model.decoder, tokens, audio_features, self.kv_cache)


class RaggedInference(PyTorchInference):
    """The text decoder for a batch whose rows have prompts of different lengths
    (``condition_chunks``: each chunk is prompted with its own predecessor's text).

    Each row is left-padded to the batch's longest initial sequence, and the padding is made
    invisible: a row's positions count from its first real token, and its keys at padded
    columns are masked out of self-attention at every step. A row computes what it would alone,
    up to floating-point differences between shapes (as between batch sizes). Caches grow with
    ``torch.cat`` (no static cache: on cuda these batches run the eager greedy loop).
    """

    def __init__(self, model: Any, initial_token_length: int, pad: torch.Tensor) -> None:
        super().__init__(model, initial_token_length)
        self.pad = pad  # (n,) padded columns at the start of each row
        self.self_kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.cross_kv: list[tuple[torch.Tensor, torch.Tensor]] = []

    def logits(self, tokens: torch.Tensor, audio_features: torch.Tensor) -> torch.Tensor:
        decoder = self.model.decoder
        pad = self.pad.to(tokens.device)
        first = not self.self_kv
        if first:
            n_new = tokens.shape[-1]
            start = 0
            self.cross_kv = [
                (b.cross_attn.key(audio_features), b.cross_attn.value(audio_features))
                for b in decoder.blocks
            ]
        else:
            tokens = tokens[:, -1:]
            n_new = 1
            start = self.self_kv[0][0].shape[1]
        cols = torch.arange(start + n_new, device=tokens.device)
        new_cols = cols[start:]
        positions = (new_cols[None, :] - pad[:, None]).clamp(min=0)
        x = decoder.token_embedding(tokens) + decoder.positional_embedding[positions]
        x = x.to(audio_features.dtype)
        # Keys a query may see: real ones (not padding), not in its future; a padded query
        # sees itself, so that its (unused) output stays finite.
        real = cols[None, :] >= pad[:, None]  # (n, keys)
        mask = real[:, None, :] & (cols[None, None, :] <= new_cols[None, :, None])
        mask |= cols[None, None, :] == new_cols[None, :, None]
        mask = mask[:, None]  # (n, 1 head, queries, keys)
        n_head = decoder.blocks[0].attn.n_head
        for i, block in enumerate(decoder.blocks):
            h = block.attn_ln(x)
            q, k, v = block.attn.query(h), block.attn.key(h), block.attn.value(h)
            if not first:
                k = torch.cat([self.self_kv[i][0], k], dim=1)
                v = torch.cat([self.self_kv[i][1], v], dim=1)
            if first:
                self.self_kv.append((k, v))
            else:
                self.self_kv[i] = (k, v)
            x = x + block.attn.out(attend(q, k, v, n_head, mask=mask))
            h = block.cross_attn_ln(x)
            ck, cv = self.cross_kv[i]
            x = x + block.cross_attn.out(attend(block.cross_attn.query(h), ck, cv, n_head))
            x = x + block.mlp(block.mlp_ln(x))
        return vocab_logits(decoder.ln(x), decoder.token_embedding.weight)

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only these rows (the others finished)."""
        self.pad = self.pad[rows.to(self.pad.device)]
        self.self_kv = [(k[rows], v[rows]) for k, v in self.self_kv]
        self.cross_kv = [(k[rows], v[rows]) for k, v in self.cross_kv]

    def rearrange_kv_cache(self, source_indices: Any) -> None:
        raise TranscriptionError("beam search over prompts of different lengths is not supported")

    def cleanup_caching(self) -> None:
        self.self_kv, self.cross_kv = [], []


def ragged_initial_tokens(
    sot_prev: int, sot_sequence: Sequence[int], prompts: Sequence[Sequence[int]], pad_token: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's initial tokens (``[sot_prev] + prompt + sot_sequence``, or the SOT sequence
    alone without a prompt), left-padded to the longest: (tokens (n, L), padding per row)."""
    rows = [([sot_prev, *p] if p else []) + list(sot_sequence) for p in prompts]
    width = max(len(r) for r in rows)
    pad = torch.tensor([width - len(r) for r in rows], dtype=torch.long)
    tokens = torch.tensor([[pad_token] * (width - len(r)) + r for r in rows], dtype=torch.long)
    return tokens, pad


class BatchDecodingTask(DecodingTask):
    """Whisper's ``DecodingTask`` with vectorised timestamp rules and finished rows dropped."""

    def __init__(
        self,
        model: Any,
        options: DecodingOptions,
        static: bool | None = None,
        continue_before: Sequence[int] | None = None,
        prompts: Sequence[Sequence[int]] | None = None,
    ) -> None:
        # prompts: one per row, when rows differ (RaggedInference); options.prompt is then
        # the longest, so that sample_begin and the SOT's column are those of the padded rows.
        self.ragged: tuple[torch.Tensor, torch.Tensor] | None = None
        if prompts is not None and len(set(map(tuple, prompts))) > 1:
            longest = max(prompts, key=len)
            options = dataclasses.replace(options, prompt=list(longest) or None)
        else:
            prompts = None
        super().__init__(model, options)
        if prompts is not None:
            self.ragged = ragged_initial_tokens(
                self.tokenizer.sot_prev,
                self.sot_sequence,
                prompts,
                self.tokenizer.sot_prev,
            )
            assert self.ragged[0].shape[1] == len(self.initial_tokens)
        # static: decode greedily over a static KV cache (pipeline.asr.static_decode);
        # None: on cuda.
        self.static = static
        self.inference: PyTorchInference = BatchInference(model, len(self.initial_tokens))
        if self.ragged is not None:
            self.inference = RaggedInference(model, len(self.initial_tokens), self.ragged[1])
        if hasattr(self.decoder, "inference"):  # beams reorder the cache of this inference
            self.decoder.inference = self.inference
        self.logit_filters: list[LogitFilter] = [_vectorised(f) for f in self.logit_filters]
        self.continuation: ContinueInWindow | None = None
        if continue_before is not None and not options.without_timestamps:
            self.continuation = ContinueInWindow(
                self.sample_begin,
                self.tokenizer.timestamp_begin,
                self.tokenizer.eot,
                continue_before,
            )
            self.logit_filters.append(self.continuation)  # after the timestamp rules

    def _get_audio_features(self, mel: torch.Tensor) -> torch.Tensor:
        features = super()._get_audio_features(mel)
        if self.n_group > 1:
            # Whisper repeats the tokens of each window for its beams but not the window's
            # features (a batch of one broadcasts; a batch of n fails in cross-attention), and
            # takes every n_group-th row of them afterwards: repeated here, both line up.
            features = features.repeat_interleave(self.n_group, dim=0)
        return features

    def _detect_language(self, audio_features: torch.Tensor, tokens: torch.Tensor) -> Any:
        languages, probs = super()._detect_language(audio_features, tokens)
        # One per window, not per beam row (the language is given: batches need one).
        return languages[:: self.n_group], probs

    def _main_loop(self, audio_features: torch.Tensor, tokens: torch.Tensor) -> Any:
        if self.ragged is not None:
            tokens = self.ragged[0].to(tokens.device)  # the rows' own prompts, left-padded
        if not isinstance(self.decoder, GreedyDecoder):
            return super()._main_loop(audio_features, tokens)  # beams keep their groups
        static = self.static if self.static is not None else audio_features.device.type == "cuda"
        if static and self.ragged is None and self.decoder.temperature == 0:
            return self._static_loop(audio_features, tokens)
        return self._greedy_loop(audio_features, tokens)

    def _static_loop(self, audio_features: torch.Tensor, tokens: torch.Tensor) -> Any:
        # The greedy loop over a static cache (a CUDA graph per step on cuda). Rows are not
        # dropped (shapes stay fixed; a finished row appends EOT and adds 0 to its sum, so its
        # result is unchanged) and whether all rows finished is read every SYNC_EVERY steps,
        # not at each one: the extra steps append EOT only.
        eot = self.tokenizer.eot
        n_batch = tokens.shape[0]
        decoder = static_decoder(
            self.model, n_batch, audio_features.dtype, audio_features.device, use_graph=True
        )
        sum_logprobs = torch.zeros(n_batch, device=audio_features.device)
        no_speech_probs = [np.nan] * n_batch
        with decoder.lock:
            logits = decoder.start(tokens, audio_features)
            if self.tokenizer.no_speech is not None:
                probs_at_sot = logits[:, self.sot_index].float().softmax(dim=-1)
                no_speech_probs = probs_at_sot[:, self.tokenizer.no_speech].tolist()
            logits = logits[:, -1]
            for i in range(self.sample_len):
                if i > 0:
                    logits = decoder.step(tokens[:, -1], tokens.shape[-1] - 1)
                for logit_filter in self.logit_filters:
                    logit_filter.apply(logits, tokens)
                tokens, completed = greedy_update(tokens, logits, sum_logprobs, eot)
                if tokens.shape[-1] > self.n_ctx:
                    break
                if i % SYNC_EVERY == SYNC_EVERY - 1 and bool(completed):
                    break
        return tokens, sum_logprobs, no_speech_probs

    def _greedy_loop(self, audio_features: torch.Tensor, tokens: torch.Tensor) -> Any:
        # The same steps as DecodingTask._main_loop; rows are only ever dropped once their last
        # token is EOT, after which the greedy decoder would append EOT forever (and add 0 to
        # their log-probability), so the result equals the undropped loop's.
        eot = self.tokenizer.eot
        n_batch = tokens.shape[0]
        rows = torch.arange(n_batch, device=tokens.device)  # original row of each live row
        sum_logprobs = torch.zeros(n_batch, device=audio_features.device)
        live_sums = sum_logprobs.clone()
        finished: list[torch.Tensor | None] = [None] * n_batch
        no_speech_probs = [np.nan] * n_batch
        try:
            for i in range(self.sample_len):
                logits = self.inference.logits(tokens, audio_features)
                if i == 0 and self.tokenizer.no_speech is not None:
                    probs_at_sot = logits[:, self.sot_index].float().softmax(dim=-1)
                    no_speech_probs = probs_at_sot[:, self.tokenizer.no_speech].tolist()
                logits = logits[:, -1]
                for logit_filter in self.logit_filters:
                    logit_filter.apply(logits, tokens)
                tokens, completed = self.decoder.update(tokens, logits, live_sums)
                if completed or tokens.shape[-1] > self.n_ctx:
                    break
                done = tokens[:, -1] == eot
                if bool(done.any()):
                    for j in done.nonzero()[:, 0].tolist():
                        row = int(rows[j])
                        finished[row] = tokens[j]
                        sum_logprobs[row] = live_sums[j]
                    keep = (~done).nonzero()[:, 0]
                    rows, tokens, live_sums = rows[keep], tokens[keep], live_sums[keep]
                    audio_features = audio_features[keep]
                    self._keep_cache_rows(keep)
                    if self.continuation is not None:
                        self.continuation.keep(keep)
        finally:
            self.inference.cleanup_caching()
        for j, row in enumerate(rows.tolist()):
            finished[row] = tokens[j]
            sum_logprobs[row] = live_sums[j]
        rows_out = [t for t in finished if t is not None]
        assert len(rows_out) == n_batch  # every row finished or was still live at the end
        width = max(int(t.shape[0]) for t in rows_out)
        out = torch.stack([F.pad(t, (0, width - t.shape[0]), value=eot) for t in rows_out])
        return out, sum_logprobs, no_speech_probs

    def _keep_cache_rows(self, keep: torch.Tensor) -> None:
        if isinstance(self.inference, RaggedInference):
            self.inference.keep(keep)
            return
        # Self- and cross-attention caches alike (whisper's rearrange_kv_cache touches only
        # self-attention, which is enough for beams but not for dropping rows).
        cache = self.inference.kv_cache  # type: ignore[attr-defined]
        for module, value in cache.items():
            cache[module] = value[keep.to(value.device)]


def decode_batch(
    model: Any,
    mels: torch.Tensor,
    options: DecodingOptions,
    static: bool | None = None,
    continue_before: Sequence[int] | None = None,
    prompts: Sequence[Sequence[int]] | None = None,
) -> list[DecodingResult]:
    """Decode a batch of 30 s log-mel windows, shape (n, n_mels, 3000), with one options value.

    ``static``: greedy steps over a static KV cache (CUDA graphs on cuda); None: on cuda only.
    ``continue_before``: per window, the timestamp index before which a pair may not end it
    (``ContinueInWindow``); None: whisper's rules alone. ``prompts``: per window, its prompt
    tokens (in place of ``options.prompt``), for greedy decoding.
    """
    with torch.inference_mode():
        return BatchDecodingTask(model, options, static, continue_before, prompts).run(mels)
