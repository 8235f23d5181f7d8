"""Which TCB info the TDX verifier names when none is current: the newest, whatever order the files are read in.

Files in a collateral folder are read in name order; a choice that depended on that order (the first or the last
read) instead of on ``issueDate`` would name the wrong item in the ``expired`` message. Found by mutation testing
(docs/testing.md) of exporter/attest/verify_tdx.py ``_select``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.attest.errors import EvidenceError
from exporter.attest.verify_tdx import TdxVerifier

from . import forge
from .forge import AT, utc

PKI = forge.intel_pki()
WORLD = forge.tdx_world()


@pytest.mark.parametrize(("old_name", "newer_name"), [("a-old.json", "b-newer.json"), ("b-old.json", "a-newer.json")])
def test_stale_tcb_infos_name_the_newest_in_either_file_order(tmp_path: Path, old_name: str, newer_name: str) -> None:
    old = forge.signed_json("tcbInfo", forge.tcb_info_doc(issued=utc(2024, 12, 1), next_update=utc(2025, 1, 1)),
                            PKI.signing_key)
    newer = forge.signed_json("tcbInfo", forge.tcb_info_doc(issued=utc(2025, 1, 1), next_update=utc(2025, 2, 1)),
                              PKI.signing_key)
    world = WORLD.replace(tcb_info="", extra_files={old_name: old.encode(), newer_name: newer.encode()})
    with pytest.raises(EvidenceError) as err:
        TdxVerifier(forge.trust_with(PKI.root)).verify(world.quote(), AT, world.collateral(tmp_path))
    expected = (f"TDX TCB info for FMSPC b0c06f000000 is not valid at {AT.isoformat()} (issued "
                "2025-01-01T00:00:00+00:00, next update 2025-02-01T00:00:00+00:00)")
    assert (err.value.reason, str(err.value)) == ("expired", expected)
