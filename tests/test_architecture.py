"""The layers hold: the library never imports Prefect or flows, stages import only downwards and
never in a circle (import-linter's contracts in pyproject.toml), no module reaches into another's
private names, and light stages start without torch."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def test_import_contracts_are_kept() -> None:
    done = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_import_contracts_catch_a_function_level_prefect_import(tmp_path: Path) -> None:
    """The contracts see an import inside a function, not only those at module level."""
    copy = tmp_path / "repo"
    for name in ("pipeline", "flows"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy)
    bad = copy / "pipeline" / "quality" / "score.py"
    bad.write_text(bad.read_text() + "\n\ndef _sneaky() -> None:\n    import prefect  # noqa\n")
    done = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        capture_output=True,
        text=True,
        cwd=copy,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(copy)},
    )
    assert done.returncode != 0
    assert "pipeline.quality.score -> prefect" in done.stdout


def _private_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline"):
            here = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            if node.module == here:
                continue
            found += [
                f"{here}: from {node.module} import {a.name}"
                for a in node.names
                if a.name.startswith("_") and not a.name.startswith("__")
            ]
    return found


def test_no_module_imports_another_modules_private_names() -> None:
    found = [
        line
        for path in sorted((ROOT / "pipeline").rglob("*.py"))
        for line in _private_imports(path)
    ]
    assert found == []


def test_light_stages_do_not_import_torch() -> None:
    """Feed, chunk and score code start fast: torch loads only for transcription."""
    code = (
        "import sys, pipeline.audio.chunk, pipeline.audio.decode, pipeline.sources.fetch, "
        "pipeline.core.transcript, pipeline.episode, pipeline.quality.report; "
        "print('torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert done.stdout.strip() == "False"
