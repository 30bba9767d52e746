"""The ``trialscreen screen`` command: exit codes, unreadable input, and the text checklist."""

import json
from pathlib import Path

import pytest

from cds_service.cli import main

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "fixtures" / "09-ineligible-allo-hsct-3-months.json"
AT = "2026-10-01T09:00:00Z"


def test_unreadable_input_exits_2_with_one_line_and_still_screens_the_rest(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    status = main(["screen", str(bad), str(tmp_path / "missing.json"), str(FIXTURE), "--at", AT, "--format",
                   "json"])
    out, err = capsys.readouterr()
    assert status == 2
    assert [line.split(":")[0] for line in err.strip().splitlines()] == ["trialscreen", "trialscreen"]
    [screening] = [json.loads(line) for line in out.splitlines()]
    assert screening["patient"] == "Patient/ts09-patient" and screening["status"] == "ineligible"


def test_text_checklist_marks_blocking_items_and_their_until_date(capsys):
    assert main(["screen", str(FIXTURE), "--at", AT]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Patient/ts09-patient  INELIGIBLE")
    [e5] = [line for line in out.splitlines() if " E5 " in line]
    assert e5.lstrip().startswith("[!]") and "[until 2027-01-02]" in e5
    assert "- Procedure/ts09-hsct-1: " in out
    assert sum(1 for line in out.splitlines() if line.startswith("  [")) == 46


def test_at_must_be_iso_8601(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["screen", str(FIXTURE), "--at", "yesterday"])
    assert exc.value.code == 2
    assert "ISO 8601" in capsys.readouterr().err


def test_an_empty_file_or_folder_says_so_and_exits_2(tmp_path, capsys):
    (tmp_path / "empty.ndjson").write_text("")
    (tmp_path / "nothing").mkdir()
    for path in (tmp_path / "empty.ndjson", tmp_path / "nothing"):
        assert main(["screen", str(path), "--at", "2026-10-01T09:00:00Z"]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and "no patient record found in" in captured.err


def test_a_bad_at_value_names_the_option_once(capsys):
    with pytest.raises(SystemExit):
        main(["screen", "x.json", "--at", "yesterday"])
    err = capsys.readouterr().err
    assert "argument --at: not an ISO 8601 date/time: 'yesterday'" in err and "--at: --at" not in err
