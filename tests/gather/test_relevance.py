"""The fast path (skip resources no criterion can use, before model validation) changes no screening result."""

import os
from pathlib import Path

import pytest
from builders import AT

from cds_service.config import default_knowledge
from cds_service.gather.bundles import records_from_paths
from cds_service.pipeline import screen

ROOT = Path(__file__).resolve().parents[2]
SYNTHEA = Path(os.environ.get("TRIALSCREEN_SYNTHEA_DIR", ROOT.parent / "shared" / "synthea"))


def _screenings(paths, tables):
    return [screen(r, AT).to_json() for r in records_from_paths(paths, tables)]


def test_fast_path_is_identical_on_fixtures():
    fixtures = ROOT / "fixtures"
    plain = _screenings([fixtures], None)
    fast = _screenings([fixtures], default_knowledge().tables)
    assert len(plain) >= 30
    assert fast == plain


@pytest.mark.skipif(not SYNTHEA.is_dir(), reason="../shared/synthea is absent")
def test_fast_path_is_identical_on_synthea():
    files = sorted(SYNTHEA.glob("*.json"))[:6]
    assert _screenings(files, default_knowledge().tables) == _screenings(files, None)
