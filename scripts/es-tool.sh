#!/usr/bin/env bash
# Runs one of the installed Elasticsearch distribution's command-line tools (elasticsearch-certutil,
# elasticsearch-users, ...) with a JDK it runs on: the integ-test distribution ships no JDK of its own.
#   scripts/es-tool.sh elasticsearch-certutil ca --pem --out ca.zip
# Env: ES_VERSION (9.2.4), ES_HOME (.cache/elasticsearch-<version>), ES_PATH_CONF (the tool's config dir).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
ES_VERSION=${ES_VERSION:-9.2.4}
ES_HOME=${ES_HOME:-$root/.cache/elasticsearch-$ES_VERSION}
source "$root/scripts/lib/es-java.sh"
tool=$1; shift
exec env ES_JAVA_HOME="$java_home" "$ES_HOME/bin/$tool" "$@"
