"""docker-compose.yml is a valid Compose file and wires the stack test_stack.py runs.

The compose-spec JSON schema comes with Debian's docker-compose package (scripts/setup.sh
installs it), as does `docker-compose config`, which checks the file without a Docker daemon.
"""

from __future__ import annotations

import glob
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from stack import podscribe_settings, server_settings

from pipeline.sources import catalog

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
_MISSING = "docker-compose not installed: `apt-get install docker-compose` (scripts/setup.sh does)"


@pytest.fixture(scope="module")
def compose_schema() -> dict[str, Any]:
    found = glob.glob("/usr/lib/python3*/dist-packages/compose/config/compose_spec.json")
    if not found:
        pytest.skip(_MISSING)
    return dict(json.loads(Path(found[0]).read_text()))


def _errors(schema: dict[str, Any], document: dict[str, Any]) -> list[str]:
    # The file says draft 2019-09 (with a trailing "#" jsonschema does not look up).
    validator = jsonschema.Draft201909Validator(schema)
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(document)]


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def test_compose_file_matches_the_compose_spec_schema(compose_schema: dict[str, Any]) -> None:
    assert _errors(compose_schema, _compose()) == []
    broken = _compose()
    broken["services"]["podscribe"]["enviroment"] = {"PODSCRIBE_DB": "x"}  # a typo'd key
    assert any("'enviroment'" in e for e in _errors(compose_schema, broken))


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip(_MISSING)
    ok = subprocess.run(
        [exe, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(COMPOSE.read_text().replace("condition: service_healthy", "condition: soon"))
    refused = subprocess.run(
        [exe, "-f", str(bad), "config", "-q"], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode != 0 and "condition" in refused.stderr


def test_compose_keeps_prefect_and_the_catalog_on_its_postgres() -> None:
    services = _compose()["services"]
    postgres = services["postgres"]["environment"]
    prefect_db = services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert prefect_db == (
        f"postgresql+asyncpg://{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{postgres['POSTGRES_DB']}"
    )
    catalog_db = services["podscribe"]["environment"]["PODSCRIBE_DB"]
    # The catalog reads it as PostgreSQL (not as a file path), on the same server.
    assert (
        catalog.describe(catalog_db) == "postgresql+psycopg://prefect:***@postgres:5432/podscribe"
    )
    init = ROOT / "deploy" / "postgres-init.sql"
    assert f"./deploy/{init.name}:/docker-entrypoint-initdb.d/" in " ".join(
        services["postgres"]["volumes"]
    )
    assert "CREATE DATABASE podscribe" in init.read_text()


def test_compose_sets_the_settings_the_stack_test_runs_with(tmp_path: Path) -> None:
    """The same names as test_stack.py's processes get, with values of the same shape."""
    services = _compose()["services"]
    server = services["prefect-server"]["environment"]
    tested_server = server_settings("postgresql://u@127.0.0.1:5432/prefect")
    # The UI's address for browsers: only the compose stack serves the UI.
    assert set(server) == set(tested_server) | {"PREFECT_UI_API_URL"}
    podscribe = services["podscribe"]["environment"]
    tested = podscribe_settings(
        "http://127.0.0.1:4200/api",
        "postgresql://u@127.0.0.1:5432/podscribe",
        audio=tmp_path / "audio",
        transcripts=tmp_path / "transcripts",
        results=tmp_path / "results",
    )
    assert set(podscribe) == set(tested)
    for name, value in tested.items():
        ours = str(podscribe[name])
        if name.endswith(("_ROOT", "_DIR")):
            # absolute paths, each on one of the service's volumes
            mounts = [v.split(":")[1] for v in services["podscribe"]["volumes"]]
            assert ours.startswith("/") and ours in mounts, (name, ours)
        elif "://" in value:
            assert ours.split("://")[0] == value.split("://")[0], (name, ours)
        else:
            assert ours == value, (name, ours)
    for name in ("PREFECT_SERVER_ANALYTICS_ENABLED", "DO_NOT_TRACK"):
        assert str(server[name]) == tested_server[name]
    assert server["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
