"""The trial rules are read with libyaml's safe loader when present: the same data as PyYAML's safe_load."""

import yaml

from cds_service import rules
from cds_service.facts.codes import default_mappings_dir


def test_trial_rules_read_with_the_c_safe_loader_equal_safe_load():
    path = default_mappings_dir() / "trial" / "nct06880354.yaml"
    assert rules._SAFE_LOADER is yaml.CSafeLoader
    assert rules._read_yaml(path) == yaml.safe_load(path.read_text(encoding="utf-8"))
