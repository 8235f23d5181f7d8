"""The rule files, their promtool unit tests, the runbook they link to and the example Alertmanager config."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "alerts"
RULE_FILES = sorted(ALERTS.glob("*.rules.yml"))
UNIT_TESTS = sorted((ALERTS / "tests").glob("*.yml"))
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_URL = "https://github.com/tee-monitor/tee-monitor/blob/main/docs/runbook.md#"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def _alerts() -> list[dict]:
    return [rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if "alert" in rule]


def _alert_cases() -> list[dict]:
    return [case for path in UNIT_TESTS for test in yaml.safe_load(path.read_text())["tests"]
            for case in test.get("alert_rule_test", [])]


def test_rule_files_pass_promtool_check() -> None:
    result = _run("promtool", "check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("unit_test", UNIT_TESTS, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(unit_test: Path) -> None:
    result = _run("promtool", "test", "rules", str(unit_test))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_severity_category_summary_description_and_runbook() -> None:
    for alert in _alerts():
        assert alert["labels"]["severity"] in {"critical", "warning"}, alert["alert"]
        assert alert["labels"]["category"] in {"security", "operational"}, alert["alert"]
        assert set(alert["annotations"]) >= {"summary", "description", "runbook_url"}, alert["alert"]


def test_every_alert_has_a_unit_test_that_fires_it_and_one_that_keeps_it_quiet() -> None:
    cases = _alert_cases()
    for name in (alert["alert"] for alert in _alerts()):
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case.get("exp_alerts") for case in mine), f"{name}: no case fires it"
        assert any(not case.get("exp_alerts") for case in mine), f"{name}: no case keeps it quiet"


def test_fired_cases_check_labels_and_annotations() -> None:
    for case in _alert_cases():
        for expected in case.get("exp_alerts") or []:
            assert {"severity", "category", "instance"} <= set(expected["exp_labels"]), case["alertname"]
            assert {"summary", "description", "runbook_url"} <= set(expected["exp_annotations"]), case["alertname"]


def _github_anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def test_every_runbook_url_points_at_a_section_of_the_runbook() -> None:
    anchors = _github_anchors(RUNBOOK.read_text())
    for alert in _alerts():
        url = alert["annotations"]["runbook_url"]
        assert url.startswith(RUNBOOK_URL), url
        assert url.removeprefix(RUNBOOK_URL) in anchors, f"{alert['alert']}: no runbook section for {url}"


def test_alertmanager_example_passes_amtool_check_config() -> None:
    result = _run("amtool", "check-config", str(ALERTS / "alertmanager.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def _receivers(*labels: str) -> set[str]:
    result = _run("amtool", "config", "routes", "test", f"--config.file={ALERTS / 'alertmanager.yml'}", *labels)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.strip().split(","))


def test_every_security_alert_is_routed_to_the_tee_audit_webhook() -> None:
    for alert in _alerts():
        labels = [f"alertname={alert['alert']}"] + [f"{k}={v}" for k, v in alert["labels"].items()]
        receivers = _receivers(*labels)
        assert ("tee-audit" in receivers) == (alert["labels"]["category"] == "security"), (alert["alert"], receivers)
        assert receivers - {"tee-audit"}, f"{alert['alert']} reaches no human receiver"


def test_tee_audit_receiver_sends_resolved_alerts_too() -> None:
    config = yaml.safe_load((ALERTS / "alertmanager.yml").read_text())
    receiver = next(r for r in config["receivers"] if r["name"] == "tee-audit")
    assert all(hook["send_resolved"] for hook in receiver["webhook_configs"])
