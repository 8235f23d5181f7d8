#!/usr/bin/env bash
# Installs the Elasticsearch integ-test distributions (server modules only, no x-pack) the audit tests run
# against: 9.x (the main target) and 8.x (the oldest major the sink supports, tests/audit/test_es8_compat.py).
# Fetched from Maven Central with maven, copied to .cache/downloads/ and unzipped into .cache/elasticsearch-<version>/.
# Idempotent: a second run only checks. ES_VERSION installs just that one version; ES_VERSIONS (space separated)
# overrides the list installed by default.
set -euo pipefail
cd "$(dirname "$0")/.."
ES_VERSIONS=${ES_VERSION:-${ES_VERSIONS:-9.2.4 8.19.3}}
tmp=
trap 'rm -rf "${tmp:-}"' EXIT

install_one() {
  local version=$1 dest=.cache/elasticsearch-$1
  if [[ -x $dest/bin/elasticsearch ]]; then return 0; fi
  local artifact=org.elasticsearch.distribution.integ-test-zip:elasticsearch:$version:zip
  # dependency:copy resolves through maven's own local repository (wherever user.home puts it, not always $HOME)
  # and copies the zip to a path we know.
  local zip=.cache/downloads/elasticsearch-$version.zip
  if [[ ! -s $zip ]]; then
    mvn -q -B dependency:copy -Dartifact="$artifact" -DoutputDirectory=.cache/downloads
  fi
  mkdir -p .cache
  tmp=$(mktemp -d .cache/es-unzip.XXXXXX)
  # A half-unzipped tree must never look installed: unzip aside, then move into place.
  unzip -q "$zip" -d "$tmp"
  rm -rf "$dest"
  mv "$tmp/elasticsearch-$version" "$dest"
  rm -rf "$tmp"
  tmp=
  echo "elasticsearch $version installed in $dest" >&2
}

for version in $ES_VERSIONS; do
  install_one "$version"
done
