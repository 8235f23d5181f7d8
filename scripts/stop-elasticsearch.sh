#!/usr/bin/env bash
# Stops the Elasticsearch started by start-elasticsearch.sh (by its pid file) and waits until it has exited.
# Idempotent: does nothing when it is not running. Env: ES_PORT (9200), ES_DATA as for start.
set -euo pipefail
cd "$(dirname "$0")/.."
ES_PORT=${ES_PORT:-9200}
ES_DATA=${ES_DATA:-$PWD/.cache/es-data-$ES_PORT}
pidfile=$ES_DATA/es.pid
[[ -s $pidfile ]] || exit 0
pid=$(cat "$pidfile")
if kill -0 "$pid" 2>/dev/null; then
  kill "$pid"
  for _ in $(seq 1 120); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
fi
rm -f "$pidfile"
