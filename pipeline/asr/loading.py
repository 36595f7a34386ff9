"""Load the model the options name, for whichever engine runs it (once per process)."""

from __future__ import annotations

from pipeline.asr.options import LoadedModel, TranscribeOptions, resolve_device
from pipeline.asr.weights import load_whisper_model, resolve_model


def load_model(options: TranscribeOptions) -> LoadedModel:
    """Resolve and load the options' model once per process (models caches it)."""
    if options.backend == "faster-whisper":
        from pipeline.asr.ct2 import load_ct2_model

        ct2 = load_ct2_model(options.model, options.device)
        return LoadedModel(model=ct2, info=ct2.info, device=ct2.device)
    device = resolve_device(options.device)
    info = resolve_model(options.model)
    return LoadedModel(model=load_whisper_model(info, device), info=info, device=device)
