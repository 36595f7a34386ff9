"""Speech recognition: options, offline weights, the openai-whisper and CTranslate2 engines, batched
and GPU decoding, and the store of finished chunk results."""
