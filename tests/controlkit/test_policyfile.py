from __future__ import annotations

import json
from pathlib import Path

import pytest

from controlkit.policyfile import POLICY_SCHEMA, PolicyFile, load_policy_file
from identification.errors import PolicyError


def test_round_trip_through_a_file(tmp_path: Path) -> None:
    pf = PolicyFile(kind="pid", params={"kp": 1.5}, limits={"b_min": 1, "b_max": 64}, slos={"tpot_s": 0.05},
                    sample_period_s=0.025, certificate={"claims": []})
    path = tmp_path / "p.json"
    pf.save(path)
    assert json.loads(path.read_text())["schema"] == POLICY_SCHEMA
    assert load_policy_file(path) == pf


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"kind": "pid"}, "schema"),
        ({"schema": POLICY_SCHEMA, "kind": ""}, "kind"),
        ({"schema": POLICY_SCHEMA, "kind": "pid", "sample_period_s": -1}, "sample_period_s"),
        ({"schema": POLICY_SCHEMA, "kind": "pid", "params": [1]}, "params"),
    ],
)
def test_bad_documents_name_the_file_and_field(tmp_path: Path, doc: dict[str, object], needle: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(PolicyError, match=needle) as info:
        load_policy_file(path)
    assert str(path) in str(info.value)


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "schema": \n}')
    with pytest.raises(PolicyError, match="line 3"):
        load_policy_file(path)
