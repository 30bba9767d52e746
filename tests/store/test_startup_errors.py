"""A store that cannot be opened at start-up is one readable line naming the setting to fix, never a traceback:
``TRIALSCREEN_STATE_DIR`` for SQLite, ``TRIALSCREEN_DATABASE_URL`` (password hidden) for PostgreSQL."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cds_service.config import Settings
from cds_service.errors import ConfigurationError
from cds_service.store import open_store


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def test_a_state_dir_that_cannot_be_created_names_trialscreen_state_dir(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigurationError) as caught:
        open_store(Settings(state_dir=blocker / "state"))
    message = str(caught.value)
    assert message.startswith("TRIALSCREEN_STATE_DIR: cannot write the SQLite store in ") and "\n" not in message


def test_a_database_file_that_cannot_be_opened_names_trialscreen_state_dir(tmp_path):
    (tmp_path / "trialscreen.sqlite3").mkdir()
    with pytest.raises(ConfigurationError, match="^TRIALSCREEN_STATE_DIR: cannot write the SQLite store"):
        open_store(Settings(state_dir=tmp_path))


def test_an_unreachable_postgresql_names_trialscreen_database_url_without_the_password():
    url = f"postgresql://trialscreen:s3cret@127.0.0.1:{_closed_port()}/test"
    with pytest.raises(ConfigurationError) as caught:
        open_store(Settings(database_url=url))
    message = str(caught.value)
    assert message.startswith("TRIALSCREEN_DATABASE_URL: cannot use the database postgresql+psycopg://trialscreen:***@")
    assert "s3cret" not in message and "\n" not in message and "refused" in message.lower()


def test_serve_with_an_unreachable_database_exits_3_with_one_line(tmp_path):
    env = {**os.environ, "TRIALSCREEN_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{_closed_port()}/test",
           "TRIALSCREEN_AUTH_REQUIRED": "false", "TRIALSCREEN_LOG_LEVEL": "ERROR"}
    proc = subprocess.run([sys.executable, "-m", "cds_service.cli", "serve", "--port", str(_closed_port())],
                          env=env, capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2])
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("trialscreen: configuration error: TRIALSCREEN_DATABASE_URL: cannot use the database")
