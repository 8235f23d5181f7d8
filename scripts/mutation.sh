#!/usr/bin/env bash
# Mutation testing of the trust-critical modules (mutmut; see docs/testing.md): one module at a time, each with its
# narrow test selection (tests/mutation/modules.toml), at low priority. Prints killed/survived per module and exits
# non-zero when a mutant survives that tests/mutation/equivalent.toml does not list as equivalent.
#   scripts/mutation.sh                      # every module
#   scripts/mutation.sh verify_snp trust     # some modules (scripts/mutation.sh --list names them)
#   MUTATION_JOBS=1 scripts/mutation.sh ...  # mutants tested at once (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/mutmut ] || bash scripts/bootstrap.sh
exec nice -n 10 .venv/bin/python tests/mutation/driver.py --jobs "${MUTATION_JOBS:-2}" "$@"
