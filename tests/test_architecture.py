"""The library stays plain Python: importing it must not pull in Prefect (STYLE.md)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted(p.stem for p in (ROOT / "pipeline").glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("module", MODULES)
def test_pipeline_module_does_not_import_prefect(module: str) -> None:
    code = (
        f"import sys, pipeline.{module}; "
        "bad = sorted(m for m in sys.modules if m == 'prefect' or m.startswith('prefect.')); "
        "print(','.join(bad))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, check=True)
    assert done.stdout.strip() == "", f"pipeline.{module} imports {done.stdout.strip()}"


def test_ruff_bans_prefect_in_pipeline() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert '[tool.ruff.lint.flake8-tidy-imports.banned-api]' in text
    assert '"prefect".msg' in text


def test_light_stages_do_not_import_torch() -> None:
    """Feed, chunk and score code start fast: torch loads only for transcription."""
    code = (
        "import sys, pipeline.audio.chunk, pipeline.audio.decode, pipeline.sources.fetch, pipeline.core.transcript; "
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, check=True)
    assert done.stdout.strip() == "False"
