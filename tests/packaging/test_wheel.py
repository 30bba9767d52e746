"""The wheel is self-contained: built, installed in a fresh venv, and used from a folder outside the checkout
with no ``TRIALSCREEN_*`` variable, ``screen``, ``demo --no-serve`` and ``serve`` work.

One module-scoped build and install (about 30 s with a warm pip cache); every command runs with the temporary
folder as its working directory, so nothing can be found through the source tree.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving import free_port, stop_process_group, wait_until_answering

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.packaging


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIALSCREEN_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(out), str(ROOT)],
                           check=True, cwd=out, env=_clean_env(), timeout=600, capture_output=True, text=True)
    warnings = [line for line in (built.stdout + built.stderr).splitlines() if "Warning" in line]
    assert not warnings, warnings  # a clean build: no license, package-data or configuration warnings
    (built,) = out.glob("trialscreen-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Iterator[tuple[Path, Path]]:
    """(the fresh venv's bin folder, an empty working folder outside the checkout)."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
                   check=True, env=_clean_env(), timeout=900)
    yield venv / "bin", tmp_path_factory.mktemp("elsewhere")


def test_the_wheel_holds_every_subpackage_and_the_shipped_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    subpackages = {p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "cds_service").rglob("__init__.py")}
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert {p.replace("/", ".") for p in subpackages} <= listed, "a cds_service subpackage is missing in pyproject"
    assert {f"{p}/__init__.py" for p in subpackages} <= names
    for folder, data in (("fhir_mappings", ROOT / "fhir_mappings"), ("fixtures", ROOT / "fixtures"),
                         ("site_tables", ROOT / "examples" / "site-tables")):
        shipped = {f.relative_to(data).as_posix() for f in data.rglob("*") if f.is_file()}
        assert shipped and {f"cds_service/data/{folder}/{f}" for f in shipped} <= names, folder


def test_screen_from_any_folder(installed):
    bin_dir, cwd = installed
    fixtures = subprocess.run([str(bin_dir / "python"), "-c",
                               "from cds_service.shipped import shipped_dir; print(shipped_dir('fixtures'))"],
                              check=True, capture_output=True, text=True, cwd=cwd, env=_clean_env()).stdout.strip()
    assert "site-packages" in fixtures and not fixtures.startswith(str(ROOT))
    done = subprocess.run([str(bin_dir / "trialscreen"), "screen", fixtures, "--at", "2026-10-01T09:00:00Z",
                           "--format", "json"], capture_output=True, text=True, cwd=cwd, env=_clean_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # The installed package (its own code tables, rules and fixtures) screens exactly as the source tree does.
    source = subprocess.run([sys.executable, "-m", "cds_service.cli", "screen", str(ROOT / "fixtures"), "--at",
                             "2026-10-01T09:00:00Z", "--format", "json"], capture_output=True, text=True,
                            cwd=ROOT, env=_clean_env(), timeout=300, check=True)
    assert len(done.stdout.splitlines()) >= 45
    assert done.stdout == source.stdout


def test_demo_without_serving_from_any_folder(installed):
    bin_dir, cwd = installed
    done = subprocess.run([str(bin_dir / "trialscreen"), "demo", "--no-serve"], capture_output=True, text=True,
                          cwd=cwd, env=_clean_env(), timeout=600)
    assert done.returncode == 0, (done.stdout[-1500:], done.stderr[-1500:])
    assert "Possible candidate" in done.stdout


def test_serve_answers_discovery_from_any_folder(installed, tmp_path):
    bin_dir, cwd = installed
    port = free_port()
    env = _clean_env(TRIALSCREEN_STATE_DIR=str(tmp_path / "state"), TRIALSCREEN_AUTH_REQUIRED="false")
    proc = subprocess.Popen([str(bin_dir / "trialscreen"), "serve", "--port", str(port), "--workers", "1"],
                            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        resp = wait_until_answering(f"http://127.0.0.1:{port}/cds-services", proc)
        assert resp.json()["services"][0]["id"] == "trialscreen-nct06880354"
    finally:
        stop_process_group(proc)
        proc.stderr.close()
