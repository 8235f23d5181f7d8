"""The set-up credential stays off the hosts: `tee-audit setup` runs as a pre-install/pre-upgrade hook Job with a
Secret of its own, and the DaemonSet (on every host) references the shipping credential only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pytest

from audit.setup_cli import setup as setup_command
from tests.helm.render import ALL_SWITCHES_FLIPPED, API_KEY_AUTH, Helm, find, one

SETUP_SECRETS = {"all-switches-flipped": ("es-setup-password", ALL_SWITCHES_FLIPPED),
                 "es-api-key": ("es-setup-api-key", API_KEY_AUTH)}


@pytest.mark.parametrize("variant", sorted(SETUP_SECRETS))
def test_the_daemonset_never_references_the_setup_secret(helm: Helm, tmp_path: Path, variant: str) -> None:
    secret, values = SETUP_SECRETS[variant]
    daemonset = one(helm.manifests(values, tmp_path), "DaemonSet")
    # anywhere: volumes, env, envFrom, projected sources, annotations
    assert secret not in json.dumps(daemonset)
    assert "es-setup" not in json.dumps(daemonset)


@pytest.mark.parametrize("variant", sorted(SETUP_SECRETS))
def test_the_setup_job_is_a_hook_with_the_setup_secret_and_not_the_shipping_one(
        helm: Helm, tmp_path: Path, variant: str) -> None:
    secret, values = SETUP_SECRETS[variant]
    job = one(helm.manifests(values, tmp_path), "Job", "-audit-setup")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    pod = job["spec"]["template"]["spec"]
    secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    shipping = {"es-password", "es-api-key"}
    assert secret in secrets and not secrets & shipping
    assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "Never"
    (ctr,) = pod["containers"]
    assert ctr["command"] == ["tee-audit"] and ctr["args"][0] == "setup"
    mounted = {m["mountPath"] for m in ctr["volumeMounts"]}
    for arg in ctr["args"]:
        if arg.startswith(("--es.password-file=", "--es.api-key-file=", "--es.ca-file=")):
            assert str(Path(arg.split("=", 1)[1]).parent) in mounted, arg
    assert ctr["securityContext"]["readOnlyRootFilesystem"] is True
    assert ctr["securityContext"]["runAsNonRoot"] is True


def test_the_setup_job_arguments_are_what_tee_audit_setup_accepts(helm: Helm, tmp_path: Path) -> None:
    job = one(helm.manifests(ALL_SWITCHES_FLIPPED, tmp_path), "Job", "-audit-setup")
    args: list[str] = job["spec"]["template"]["spec"]["containers"][0]["args"]
    ctx = setup_command.make_context("setup", args[1:], resilient_parsing=False)
    assert ctx.params["es"] == "https://es.example:9200"
    assert (ctx.params["namespace"], ctx.params["retention"], ctx.params["username"]) == ("prod", "90d", "tee-setup")


def test_retention_goes_to_setup_not_to_the_shippers_config(helm: Helm, tmp_path: Path) -> None:
    manifests = helm.manifests(ALL_SWITCHES_FLIPPED, tmp_path)
    assert "es.retention" not in one(manifests, "ConfigMap", "-audit")["data"]["config.yml"]


def test_no_job_without_elasticsearch_or_with_setup_off(helm: Helm, tmp_path: Path) -> None:
    assert not find(helm.manifests(), "Job")
    off: dict[str, Any] = json.loads(json.dumps(API_KEY_AUTH))
    off["audit"]["elasticsearch"]["setup"] = {"enabled": False}
    manifests = helm.manifests(off, tmp_path)
    assert not find(manifests, "Job") and find(manifests, "DaemonSet")


@pytest.mark.parametrize(("setup", "says"), [
    ({}, "audit.elasticsearch.setup needs its own credential"),
    ({"apiKeySecret": {"name": "es-api-key"}}, 'Secret "es-api-key" is also the shipping credential'),
    ({"username": "u", "passwordSecret": {"name": "es-api-key"}}, 'Secret "es-api-key" is also the shipping'),
    ({"username": "u"}, "setup.passwordSecret.name is empty"),
])
def test_a_setup_credential_that_is_missing_or_shared_with_the_shipper_is_refused(
        helm: Helm, tmp_path: Path, setup: dict[str, Any], says: str) -> None:
    values: dict[str, Any] = json.loads(json.dumps(API_KEY_AUTH))
    values["audit"]["elasticsearch"]["setup"] = setup
    result = helm.template(values, tmp_path)
    assert result.returncode != 0 and says in result.stderr, result.stderr


def test_the_shipping_user_cannot_double_as_the_setup_user(helm: Helm, tmp_path: Path) -> None:
    values: dict[str, Any] = json.loads(json.dumps(ALL_SWITCHES_FLIPPED))
    values["audit"]["elasticsearch"]["setup"]["username"] = "tee-audit"
    result = helm.template(values, tmp_path)
    assert result.returncode != 0 and "setup.username is the shipping user" in result.stderr


def test_setup_help_is_clear() -> None:
    text = setup_command.get_help(click.Context(setup_command))
    assert "tee_setup" in text and "--es.retention" in text and "Idempotent" in text
