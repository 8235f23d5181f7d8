"""The README demo's attestation inputs give the verdicts exporter/demo/attestation/README.md promises."""

from __future__ import annotations

import subprocess
from collections import Counter

from exporter.collectors.attestation import AttestationCollector
from exporter.collectors.kbs import KbsCollector

from ..helpers import exposition, promtool_check, value
from .test_collectors import journal_events, make_ctx, wait_for
from .vectors import ROOT

DEMO = ROOT / "exporter" / "demo" / "attestation"


def test_demo_feed_gives_documented_verdicts(tmp_path) -> None:
    evidence, logs = tmp_path / "evidence", tmp_path / "logs"
    ctx, journal = make_ctx(tmp_path, attestation_evidence_dir=evidence,
                            attestation_policy_file=DEMO / "policy.json", attestation_collateral_dir=DEMO / "collateral",
                            attestation_log_paths=(logs / "as.log",), kbs_log_paths=(logs / "kbs.log",))
    att, kbs = AttestationCollector(ctx), KbsCollector(ctx)
    att.start()
    kbs.start()
    try:
        subprocess.run(["bash", str(DEMO / "feed.sh"), str(evidence), str(logs)], check=True)
        assert wait_for(lambda: len(journal_events(journal, "tee.attestation")) == 11)
        assert wait_for(lambda: len(journal_events(journal, "tee.kbs")) == 4)
        text = exposition(att, kbs)
    finally:
        att.stop()
        kbs.stop()
    assert promtool_check(text) == ""
    verdicts = {e["file"]["path"].rsplit("/", 1)[1]: e["event"].get("reason", "ok")
                for e in journal_events(journal, "tee.attestation") if "file" in e}
    assert verdicts == {"snp-milan-2.bin": "ok", "snp-genoa-5.bin": "ok", "tdx-quote-v4-3.dat": "ok",
                        "tdx-quote-v5-2.dat": "ok", "snp-milan-1-debug.bin": "debug",
                        "snp-milan-2-tampered.bin": "signature", "tdx-quote-truncated.dat": "parse"}
    assert value(text, "tee_kbs_resource_requests_total", outcome="released", resource_type="key", reason="none") == 1
    logged = Counter(e["event"]["outcome"] for e in journal_events(journal, "tee.attestation") if "file" not in e)
    assert logged == Counter({"success": 3, "failure": 1})
