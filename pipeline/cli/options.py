"""Command-line options several commands share; each falls back to its PODSCRIBE_* setting."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from pipeline.core.errors import OptionsError

StyleOption = Annotated[
    str,
    typer.Option(
        help="clean | verbatim: clean takes fillers ('um', 'you know' where it is not the "
        "verb) out of the text, as publishers' transcripts do; verbatim keeps them."
    ),
]
ModelOption = Annotated[
    str | None,
    typer.Option(help="Whisper model name or .pt path (default: $PODSCRIBE_MODEL or tiny.en)."),
]
AudioRootOption = Annotated[
    Path | None,
    typer.Option(
        help="Where decoded audio and chunks go (default: $PODSCRIBE_AUDIO_ROOT or audio)."
    ),
]
TranscriptsRootOption = Annotated[
    Path | None,
    typer.Option(help="Where outputs go (default: $PODSCRIBE_TRANSCRIPTS_ROOT or transcripts)."),
]
StorageUrlOption = Annotated[
    str | None,
    typer.Option(
        help="Shared storage root for workers on other machines: a folder or an fsspec URL "
        "(s3://bucket/podscribe, gs://..., file:///mnt/shared) (default: $PODSCRIBE_STORAGE_URL;"
        " unset: local roots only)."
    ),
]


@contextmanager
def flags_named(*fields: str) -> Iterator[None]:
    """Options built from flags fail naming the flag the user typed (``--max-chunk-s``), not
    the options field it fills (``max_chunk_s``, ``ChunkOptions.max_chunk_s``); the rest of
    the message is kept as it is."""
    try:
        yield
    except OptionsError as exc:
        message = str(exc)
        for field in fields:
            # A quoted span is the user's own value ('backend' given to --style): kept as typed.
            pattern = rf"'[^']*'|\b(?:\w+\.)?{re.escape(field)}\b"
            message = re.sub(pattern, partial(_flag_for, field), message)
        if message == str(exc):
            raise
        raise OptionsError(message) from exc


def _flag_for(field: str, match: re.Match[str]) -> str:
    """A field's name as its flag; a quoted span as it is."""
    return match[0] if match[0].startswith("'") else "--" + field.replace("_", "-")


# The options fields each command fills from a flag of the same name.
TRANSCRIBE_FLAGS = (
    "max_chunk_s",
    "long_chunk_s",
    "context_s",
    "beam_size",
    "batch_size",
    "condition_chunks",
    "backend",
    "style",
)
BACKFILL_FLAGS = ("max_chunk_s", "batch_size", "style")
