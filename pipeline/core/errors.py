"""The error hierarchy: every message says what failed, on which input, and what to do."""

from __future__ import annotations


class PodscribeError(Exception):
    """Base of every error podscribe raises on purpose (the CLI prints it as one line)."""


class SourceError(PodscribeError):
    """An episode source (file or URL) is missing, unreadable or not what it claims."""


class FetchError(SourceError):
    """Downloading a URL failed (network, HTTP status, size or content type)."""


class FeedError(PodscribeError):
    """A feed could not be read or holds nothing podscribe can use."""


class StorageError(PodscribeError):
    """A file could not be written (the disk is full, a quota is reached, it is read-only)."""


class ChecksumError(StorageError):
    """A stored object does not hold what its recorded sha256 says (changed or damaged)."""


class AudioError(PodscribeError):
    """ffmpeg could not decode the audio, or the audio is empty."""


class ChunkError(PodscribeError):
    """Chunking options are invalid or chunk files do not match their manifest."""


class ModelError(PodscribeError):
    """Whisper weights are unknown, missing or unreadable."""


class TranscriptionError(PodscribeError):
    """Whisper failed on a chunk."""


class DiarizationError(PodscribeError):
    """Diarizing an episode failed (its transcribed chunks are kept)."""


class ReferenceError(PodscribeError):  # shadows the builtin on purpose: our domain word
    """A reference transcript is missing, empty or in an unreadable format."""


class OptionsError(PodscribeError, ValueError):
    """An options value is out of range; raised from the options' ``__post_init__``."""


class UnsafeURLError(FetchError):
    """A URL refused before any byte is sent: its scheme, or an address on a local network."""
