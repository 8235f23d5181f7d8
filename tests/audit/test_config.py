"""``tee-audit ship`` settings: YAML keys are flag names, flags win, unknown keys and inline secrets refused."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from audit import config
from tests.audit.kit import TEE_AUDIT


def test_yaml_keys_are_flag_names_and_flags_win(tmp_path: Path) -> None:
    conf = tmp_path / "audit.yaml"
    conf.write_text("source: [/var/log/a.jsonl, /var/log/b.jsonl]\nstore: /srv/store\nes: https://es:9200\n"
                    "es.ca-file: /etc/ca.pem\nes.username: shipper\nes.password-file: /run/secrets/pw\n"
                    "es.namespace: prod\nsigning-key: /run/secrets/key\nspool.dir: /spool\n"
                    "spool.max-bytes: 1048576\ncheckpoint.every-records: 10\ncheckpoint.every-seconds: 5\n"
                    "web.listen-address: ':9999'\nalertmanager.listen-address: ':9942'\nchain: node-7\n")
    s = config.load(conf, {"es.namespace": "override", "checkpoint.every-records": 99})
    assert s.sources == (Path("/var/log/a.jsonl"), Path("/var/log/b.jsonl"))
    assert (s.store, s.es, s.es_ca_file, s.es_username) == (Path("/srv/store"), "https://es:9200",
                                                          Path("/etc/ca.pem"), "shipper")
    assert (s.es_namespace, s.checkpoint_every_records) == ("override", 99)
    assert (s.spool, s.spool_max_bytes, s.web_listen_address, s.chain) == (Path("/spool"), 1048576, ":9999",
                                                                          "node-7")


@pytest.mark.parametrize(("yaml_text", "named"), [
    ("stor: /x\n", "'stor'"), ("es.password: hunter2\n", "'es.password'"),
    ("checkpoint.every-records: many\n", "checkpoint.every-records"), ("once: 1\n", "once"),
])
def test_unknown_or_ill_typed_key_is_a_startup_error_naming_it(tmp_path: Path, yaml_text: str, named: str) -> None:
    conf = tmp_path / "audit.yaml"
    conf.write_text(yaml_text + "store: /s\nsigning-key: /k\n")
    with pytest.raises(config.ConfigError, match=named):
        config.load(conf, {})


def test_a_sink_and_a_signing_key_are_required() -> None:
    with pytest.raises(config.ConfigError, match="signing-key"):
        config.load(None, {"store": "/s"})
    with pytest.raises(config.ConfigError, match="sink"):
        config.load(None, {"signing-key": "/k"})


def test_cli_reports_unknown_config_key_and_has_no_inline_secret_flag(tmp_path: Path) -> None:
    conf = tmp_path / "audit.yaml"
    conf.write_text("bogus.key: 1\n")
    run = subprocess.run([*TEE_AUDIT, "ship", "--config.file", str(conf)], capture_output=True, text=True,
                         check=False)
    assert run.returncode == 2 and "bogus.key" in run.stderr
    helptext = subprocess.run([*TEE_AUDIT, "ship", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--es.password-file" in helptext and "--es.password " not in helptext
