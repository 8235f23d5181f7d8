#!/usr/bin/env bash
# Feed the demo exporter: evidence (certificates first, then each report/quote renamed into place, the way a
# producer should) and attestation-service / key-broker log lines appended to the tailed logs.
#   feed.sh EVIDENCE_DIR LOG_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
evidence=$1 logs=$2
mkdir -p "$evidence" "$logs"
for certs in "$here"/evidence/*.certs; do cp -r "$certs" "$evidence/"; done
for file in "$here"/evidence/*; do
  [ -f "$file" ] || continue
  cp "$file" "$evidence/.$(basename "$file").tmp" && mv "$evidence/.$(basename "$file").tmp" "$evidence/$(basename "$file")"
done
cat "$here/logs/kbs.log" >> "$logs/kbs.log"
cat "$here/logs/as.log" >> "$logs/as.log"
