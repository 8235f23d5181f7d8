#!/usr/bin/env bash
# Builds litewitness (filippo.io/torchwood, a C2SP tlog-witness) from the Go module proxy into a per-version cache
# directory: the independent witness the audit tests cosign our checkpoints with (tests/fixtures/litewitness.py).
# Its key lives in an ssh-agent (Debian openssh-client, installed by install-system.sh).
# Idempotent: once the binary is there a second run only prints its path (last line of stdout).
# Override the cache root with TEE_LITEWITNESS_CACHE; the default is a fixed location the tests also look in.
set -euo pipefail

VERSION=v0.6.1
CACHE_ROOT=${TEE_LITEWITNESS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tee-monitor}
BIN_DIR=$CACHE_ROOT/litewitness-$VERSION
BIN=$BIN_DIR/litewitness
export PATH=$PATH:/usr/local/go/bin

if [ -x "$BIN" ]; then
  echo "$BIN"
  exit 0
fi
command -v go >/dev/null || { echo "install-litewitness: go is required" >&2; exit 1; }
mkdir -p "$BIN_DIR"
echo "install-litewitness: building litewitness $VERSION" >&2
CGO_ENABLED=0 GOBIN="$BIN_DIR" go install -trimpath "filippo.io/torchwood/cmd/litewitness@$VERSION" >&2
echo "$BIN"
