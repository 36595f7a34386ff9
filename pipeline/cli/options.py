"""Command-line options several commands share; each falls back to its PODSCRIBE_* setting."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
