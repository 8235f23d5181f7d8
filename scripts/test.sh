#!/usr/bin/env bash
# The whole test suite on a fresh Debian bookworm machine: installs what the tests need (Debian packages,
# Elasticsearch, helm, a virtualenv), starts libvirtd, then runs pytest. Services that only some tests need
# (Elasticsearch, nginx, Prometheus, Alertmanager) are started by the test session's fixtures. ruff and mypy run
# first (configured in pyproject.toml): a lint or type error fails the run before any test.
# Extra arguments go to pytest, e.g. scripts/test.sh tests/exporter -k webconfig
set -euo pipefail
cd "$(dirname "$0")/.."
for step in scripts/install-*.sh; do
  echo "== $step" >&2
  bash "$step"
done
bash scripts/bootstrap.sh
echo "== ruff check" >&2
.venv/bin/ruff check .
echo "== mypy (files and scope: [tool.mypy] in pyproject.toml)" >&2
.venv/bin/mypy
# Mutation testing of the trust modules (docs/testing.md): the ones changed since the merge base with main plus
# one in daily rotation; TEE_MUTATION=all mutates every module, TEE_MUTATION=off skips the step. A run given
# pytest arguments (a subset of the tests) skips it unless TEE_MUTATION says otherwise.
default_mutation=ci
[ "$#" -eq 0 ] || default_mutation=off
case "${TEE_MUTATION:-$default_mutation}" in
  off) ;;
  all) echo "== mutation testing (all modules)" >&2; bash scripts/mutation.sh ;;
  *) echo "== mutation testing (changed modules and today's in rotation)" >&2; bash scripts/mutation.sh --ci ;;
esac
bash scripts/start-libvirtd.sh
exec .venv/bin/python -m pytest "$@"
