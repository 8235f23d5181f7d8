"""The preset DEFLATE dictionary a receipt's record is compressed with (RFC 1950 §2.2 FDICT/DICTID).

A record is a few hundred bytes of JSON, too short for DEFLATE to learn its field names before it ends; primed with
the words records are made of, it shrinks to about 40 % of its size instead of 65 %, which keeps a receipt from a
ten-million-record log under 2 KiB. The words are the exporter's vocabulary only: ECS field names in the order
RFC 8785 sorts them, enum values, and the fixed phrases of its messages; never data of any host.

FROZEN: a receipt names its dictionary by the Adler-32 in its zlib header, and verifiers look it up in ``BY_ID``.
A better dictionary is a new constant added to ``BY_ID`` (and then used by ``proof.build``); this one must stay,
byte for byte, as long as receipts made with it exist.
"""

from __future__ import annotations

import zlib

# Later words are cheaper to refer to (shorter DEFLATE distances): the most common come last.
V1 = (
    b'AttestationError(RcarAttestFailed { source: verify TEE evidence failed: Verifier evaluate failed: '
    b'Verifier/endorsement check passed. claims = {"measurement":"' b'{"mr_td":"'
    b'", initdata claims = null, runtime_data_claims = '
    b'"http":{"request":{"method":"GET"},"response":{"status_code":200}},"log":{"file":{"path":"'
    b'"source":{"address":""},"tee":{"kbs":{"decision":"denied","repository":"default","requester":"",'
    b'"resource":"kbs:///default/key/","resource_type":"key","tag":""}},"user_agent":{"original":"'
    b'confidential-data-hub/' b' GET kbs:///default/' b': released (HTTP 200)' b': denied (HTTP 401)'
    b'"policy":{"result":"pass","violations":[]},"tcb":{"pcesvn":,"qe_isvsvn":,"tee_tcb_svn_0":,"tee_tcb_svn_1":,'
    b'"tee_tcb_svn_2":},"type":"tdx"}}'
    b'"tee":{"attestation":{"product":"","signer":"pck","source":"evidence","warnings":["no collateral: '
    b'TCB status and revocation not checked"]},"evidence":{"format":"tdx-quote","sha256":"","version":4},'
    b'"measurement":"sha384:'
    b'"policy":{"result":"pass","violations":[]},"tcb":{"bootloader":,"microcode":,"snp":,"tee":0},'
    b'"type":"sev-snp"}}'
    b'"tee":{"attestation":{"product":"Milan","signer":"vcek","source":"evidence","warnings":[]},'
    b'"evidence":{"format":"snp-report","sha256":"","version":2},"measurement":"sha384:'
    b'evidence .bin verified and within policy'
    b' verified but out of policy: enforce_debug_disabled: the guest allows debugging'
    b' rejected: ' b' is out of runtime policy: max_memory, max_cpus' b' job ' b' completed'
    b'confidential guest ' b' started a tcp flow to '
    b'"file":{"hash":{"sha256":""},"path":"/var/lib/tee-exporter/evidence/"},'
    b'"event":{"action":"attestation-evidence","category":["authentication"],"dataset":"tee.attestation",'
    b'"duration":,"id":"","kind":"event","module":"tee","outcome":"success","reason":"policy",'
    b'"type":["info","allowed"]},'
    b'"event":{"action":"kbs-resource-request","category":["iam"],"dataset":"tee.kbs","id":"","kind":"event",'
    b'"module":"tee","outcome":"failure","reason":"","type":["access","denied"]},'
    b'"event":{"action":"started","category":["host"],"dataset":"tee.lifecycle","id":"","kind":"event",'
    b'"module":"tee","outcome":"success","type":["start"]},"host":{"name":""},"message":"domain '
    b'{"@timestamp":"20","chain":{"hash":"","id":"","prev_hash":"","seq":},"ecs":{"version":"8.11.0"},'
)

BY_ID: dict[int, bytes] = {zlib.adler32(V1): V1}
