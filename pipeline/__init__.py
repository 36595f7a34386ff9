"""podscribe: transcribe podcast episodes with Whisper and score each transcript.

The library is plain Python (no Prefect): each stage is one module, and stages hand each
other small frozen values (paths and numbers) defined in :mod:`pipeline.core.types`.
"""

__version__ = "0.1.0"
