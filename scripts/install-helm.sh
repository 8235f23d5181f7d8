#!/usr/bin/env bash
# Builds helm (not packaged in Debian or PyPI) from the Go module proxy into a per-version cache directory, and
# next to it crdcheck (tests/helm/crdcheck: decodes ServiceMonitor/PrometheusRule objects into the Prometheus
# Operator's Go types, which the chart tests use where kubernetes-validate has no schema).
# Idempotent: once the binaries are there a second run only prints the helm path. Prints the helm path on
# stdout (last line) so tests and other scripts can use it; progress goes to stderr.
# Override the cache root with TEE_HELM_CACHE; the default is a fixed location tests also look in.
set -euo pipefail

HELM_VERSION=v3.19.0
# The Kubernetes minor helm v3.19.0 is built against (its client-go v0.34): what `helm template` and
# `helm lint` assume when no cluster is asked. A plain `go install` leaves it at v1.20, which our chart's
# kubeVersion refuses; helm's own Makefile sets these with -X, so do we.
K8S_MAJOR=1
K8S_MINOR=34
CACHE_ROOT=${TEE_HELM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tee-monitor}
BIN_DIR=$CACHE_ROOT/helm-$HELM_VERSION
HELM=$BIN_DIR/helm

CRDCHECK_SRC=$(cd "$(dirname "$0")/.." && pwd)/tests/helm/crdcheck
CRDCHECK=$BIN_DIR/crdcheck
crdcheck_sum=$(cat "$CRDCHECK_SRC"/go.mod "$CRDCHECK_SRC"/go.sum "$CRDCHECK_SRC"/*.go | sha256sum | cut -c1-16)

# The machine image's Go lives in /usr/local/go; a non-login shell (CI) may not have it on PATH.
export PATH=$PATH:/usr/local/go/bin

need_go() {
  command -v go >/dev/null || { echo "install-helm: go is required (Debian golang-go or upstream Go)" >&2; exit 1; }
  mkdir -p "$BIN_DIR"
}

if [ ! -x "$CRDCHECK" ] || [ "$(cat "$CRDCHECK.sum" 2>/dev/null)" != "$crdcheck_sum" ]; then
  need_go
  echo "install-helm: building crdcheck" >&2
  (cd "$CRDCHECK_SRC" && CGO_ENABLED=0 go build -mod=readonly -trimpath -o "$CRDCHECK" .) >&2
  echo "$crdcheck_sum" > "$CRDCHECK.sum"
fi

if [ -x "$HELM" ] && "$HELM" version --short 2>/dev/null | grep -q "^$HELM_VERSION"; then
  echo "$HELM"
  exit 0
fi

need_go
echo "install-helm: building helm $HELM_VERSION (first run takes a few minutes)" >&2
pkg=helm.sh/helm/v3
ldflags="-s -w -X $pkg/internal/version.version=$HELM_VERSION -X $pkg/internal/version.gitTreeState=clean"
ldflags+=" -X $pkg/pkg/lint/rules.k8sVersionMajor=$K8S_MAJOR -X $pkg/pkg/lint/rules.k8sVersionMinor=$K8S_MINOR"
ldflags+=" -X $pkg/pkg/chartutil.k8sVersionMajor=$K8S_MAJOR -X $pkg/pkg/chartutil.k8sVersionMinor=$K8S_MINOR"
# CGO off: a static binary that does not depend on the build host's libc.
CGO_ENABLED=0 GOBIN="$BIN_DIR" go install -trimpath -ldflags "$ldflags" "$pkg/cmd/helm@$HELM_VERSION" >&2
"$HELM" version --short >&2
echo "$HELM"
