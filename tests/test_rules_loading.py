"""The trial rules are read with libyaml's safe loader when present: the same data as PyYAML's safe_load."""

import pytest
import yaml

from cds_service import rules
from cds_service.errors import ConfigurationError
from cds_service.facts.codes import default_mappings_dir


def test_trial_rules_read_with_the_c_safe_loader_equal_safe_load():
    path = default_mappings_dir() / "trial" / "nct06880354.yaml"
    assert rules._SAFE_LOADER is yaml.CSafeLoader
    assert rules._read_yaml(path) == yaml.safe_load(path.read_text(encoding="utf-8"))


def test_date_horizon_is_recency_plus_slack_for_listed_value_sets():
    from cds_service.config import default_knowledge

    horizon = default_knowledge().rules.date_horizon
    assert horizon is not None
    assert horizon.days["alt"] == 28 + 8 and horizon.days["qtcf"] == 90 + 8
    assert "heart-rate" not in horizon.days and "hiv-antibody" not in horizon.days



@pytest.mark.parametrize(("override", "message"), [
    ("date_horizon:\n  value_sets:\n    alt: no_such_key\n", "no recency_days.no_such_key"),
    ("date_horizon:\n  value_sets:\n    hbsag: virology\n", "recency_days.virology is None"),
])
def test_date_horizon_refuses_a_missing_or_null_recency_key(tmp_path, override, message):
    path = tmp_path / "override.yaml"
    path.write_text(override, encoding="utf-8")
    with pytest.raises(ConfigurationError, match=message):
        rules.load_trial_rules(default_mappings_dir(), path)


def test_date_horizon_of_body_weight_is_paired_with_the_creatinine_in_kg():
    from cds_service.config import default_knowledge

    knowledge = default_knowledge()
    horizon = knowledge.rules.date_horizon
    assert horizon.closest_to == {"body-weight": "creatinine"} and horizon.days["body-weight"] == 36
    # the fast path's "usable weight" converts to the value set's unit; I7c converts that to kg
    assert knowledge.tables["body-weight"].unit == "kg"
