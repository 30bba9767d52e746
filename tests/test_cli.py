"""The ``trialscreen screen`` command: exit codes, unreadable input, and the text checklist."""

import json
import re
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


def test_text_checklist_opens_with_a_summary_line_and_a_legend_and_shows_the_blocking_item(capsys):
    assert main(["screen", str(FIXTURE), "--at", AT]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "Patient/ts09-patient  INELIGIBLE  blocking: E5  to check: 2  sign-offs: 8"
    assert lines[2].startswith("Legend: BLOCKING rules the patient out")
    assert "BLOCKING    1" in lines
    [e5] = [line for line in lines if line.lstrip().startswith("E5 ")]
    assert "[until 2027-01-02]" in e5
    assert any(line.lstrip().startswith("- Procedure/ts09-hsct-1: ") for line in lines)
    assert not re.search(r"\d{4}-\d{2}-\d{2}T\d{2}:", out) and "http://loinc.org|" not in out
    met = next(line for line in lines if line.startswith("MET"))
    assert " E1 " in met  # a ruled-out exclusion is listed as met, never as "E1 not-met"


def test_text_checklist_groups_open_items_as_the_card_does_and_verbose_shows_everything(capsys):
    candidate = str(ROOT / "fixtures" / "01-candidate-relapsed-aml.json")
    assert main(["screen", candidate, "--at", "2026-12-03T09:00:00Z"]) == 0
    short = capsys.readouterr().out
    assert ("TO CHECK    Repeat 7 tests older than 28 days (last 2026-09-27): ECOG, ALT/AST, bilirubin, creatinine + "
            "weight, SpO2 on room air, hCG, blood pressure ×2") in short
    assert main(["screen", candidate, "--at", "2026-12-03T09:00:00Z", "--verbose"]) == 0
    verbose = capsys.readouterr().out
    assert len(short.splitlines()) < 40 < len(verbose.splitlines())
    assert "Observation/ts01-hbsag-1: Hepatitis B virus surface Ag [Presence] in Serum by Immunoassay: Negative" \
        in verbose  # the coded answer by its display, never http://loinc.org|LA6577-6
    blocks = re.findall(r"(?m)^ {13}\S+ .*\n((?: {19}- .*\n)*)", short)
    assert blocks and max(b.count("\n") for b in blocks) <= 2


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
