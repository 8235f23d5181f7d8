#!/usr/bin/env bash
# The main job on embedded defaults: tee-exporter on a bundled demo host (libvirt's test:// driver with plain
# and confidential domains, attestation evidence, key-broker log lines) serving /metrics, and tee-audit shipping
# its journal into a local store and verifying the chain.
#
#   ./scripts/demo.sh            install what is missing, run the demo, keep serving until Ctrl-C
#   DEMO_ONCE=1 ./scripts/demo.sh   run the demo end to end and exit (used by the test suite)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bash scripts/install-system.sh
bash scripts/bootstrap.sh
export PATH=$root/.venv/bin:$PATH

demo=${DEMO_DIR:-$root/.cache/demo}
port=${DEMO_PORT:-9940}
audit_port=${DEMO_AUDIT_PORT:-9941}
rm -rf "$demo" && mkdir -p "$demo/evidence" "$demo/logs"
att=$root/exporter/demo/attestation

# Evidence and key-broker logs are copied in after the exporter starts, so the watcher and the log tailers see
# them arrive the way they would on a real host.
tee-exporter \
  --web.listen-address "127.0.0.1:$port" \
  --libvirt.uri "test://$root/exporter/demo/testnode.xml" \
  --journal.path "$demo/journal.jsonl" \
  --attestation.evidence-dir "$demo/evidence" \
  --attestation.policy-file "$att/policy.json" \
  --attestation.collateral-dir "$att/collateral" \
  --attestation.log-path "$demo/logs/as.log" \
  --kbs.log-path "$demo/logs/kbs.log" &
exporter=$!
trap 'kill $exporter 2>/dev/null || true' EXIT

# Wait on conditions, never on a guessed sleep: the exporter answering, then one journal event per thing fed.
wait_for() {  # wait_for WHAT COMMAND...: up to 60 s
  local what=$1; shift
  for _ in $(seq 1 600); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "demo: timed out after 60 s waiting for $what" >&2; exit 1
}
wait_for "the exporter on :$port" curl -fsS "http://127.0.0.1:$port/healthz"
bash "$att/feed.sh" "$demo/evidence" "$demo/logs"
evidence=$(find "$att/evidence" -maxdepth 1 -type f | wc -l)
kbs=$(grep -c '/kbs/v0/resource/' "$att/logs/kbs.log")
as=$(grep -cE 'check passed|AttestationError' "$att/logs/as.log")
journaled() {  # journaled ACTION COUNT: the journal holds at least COUNT events of that action
  [ "$(grep -c "\"action\":\"$1\"" "$demo/journal.jsonl" 2>/dev/null)" -ge "$2" ]
}
wait_for "$evidence evidence verdicts" journaled attestation-evidence "$evidence"
wait_for "$kbs key-broker requests" journaled kbs-resource-request "$kbs"
wait_for "$as attestation-service results" journaled attestation-service-result "$as"

echo "== a few of the series at http://127.0.0.1:$port/metrics"
curl -fsS "http://127.0.0.1:$port/metrics" > "$demo/metrics.txt"
for family in tee_domain_info tee_memory_encrypted_bytes tee_host_tee_guests_running \
              tee_attestation_attempts_total tee_kbs_resource_requests_total tee_exporter_collector_success; do
  grep "^$family{" "$demo/metrics.txt" | head -6
done

echo "== journal: $(wc -l < "$demo/journal.jsonl") events in $demo/journal.jsonl"
tee-audit keygen --out "$demo/keys"
tee-audit ship --source "$demo/journal.jsonl" --store "$demo/store" --signing-key "$demo/keys/audit.key" \
  --web.listen-address "127.0.0.1:$audit_port" --once
echo "== tee-audit verify --store $demo/store"
tee-audit verify --store "$demo/store" --public-key "$demo/keys/audit.pub"

if [ -n "${DEMO_ONCE:-}" ]; then exit 0; fi
echo "== serving http://127.0.0.1:$port/metrics (Ctrl-C to stop)"
wait $exporter
