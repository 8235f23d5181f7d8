"""What an operator reads when the policy file is refused at start-up: the file, the field, and the value quoted up to
the length the product cuts it at (so a huge value cannot flood the log line).

Found by mutation testing (docs/testing.md) of exporter/attest/policy.py; each test fails when the message loses the
file, the field or its cut.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.attest.policy import PolicyError, load_policy, parse_policy


def refused_file(path: Path, text: str) -> str:
    path.write_text(text)
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    return str(err.value)


def test_bad_field_in_a_file_names_the_file_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    message = refused_file(path, '{"version": "2.0"}')
    assert message == f"{path}: version: expected one of ['1.0'] (got '2.0')"


def test_json_error_is_quoted_up_to_120_characters(tmp_path: Path) -> None:
    """An integer of 5000 digits: Python's refusal to convert it is a long ValueError; the first 120 characters."""
    path = tmp_path / "policy.json"
    message = refused_file(path, '{"version": ' + "1" * 5000 + "}")
    prefix = f"{path}: not valid JSON: "
    detail = message.removeprefix(prefix)
    assert message.startswith(prefix) and detail.startswith("Exceeds the limit (4300 digits)") and len(detail) == 120


def test_bad_list_of_names_is_quoted_up_to_80_characters() -> None:
    statuses = ["UpToDate"] + ["NoSuchStatus"] * 10
    with pytest.raises(PolicyError) as err:
        parse_policy({"version": "1.0", "attestation_policy": {"allowed_tcb_status": statuses}})
    prefix = "attestation_policy.allowed_tcb_status: expected a list of UpToDate, SWHardeningNeeded, "
    quoted = str(statuses)[:80]
    assert len(str(statuses)) > 80
    assert str(err.value).startswith(prefix) and str(err.value).endswith(f" (got {quoted})")
