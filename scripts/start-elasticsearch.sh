#!/usr/bin/env bash
# Starts the Elasticsearch installed by install-elasticsearch.sh as a single node on 127.0.0.1 and waits until the
# cluster is at least yellow. Idempotent: does nothing when ES already answers on the port.
# Env: ES_VERSION (9.2.4; 8.x runs on JDK 17), ES_PORT (9200; transport on ES_PORT+100),
# ES_HOME (.cache/elasticsearch-<version>),
# ES_DATA (.cache/es-data-<port>), ES_HEAP (512m), ES_CONF (the config dir, default the distribution's own).
# Security (present in this distribution) is off unless ES_SECURITY=true, in which case ES_CONF holds the
# security settings (TLS, file realm users and roles) and ES_URL / ES_CURL_ARGS say how to ask it for its health
# (e.g. https://127.0.0.1:PORT and "--cacert ca.crt --netrc-file creds").
# ES refuses to run as root, so it runs as the unprivileged user "elasticsearch" (created when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
ES_VERSION=${ES_VERSION:-9.2.4}
ES_PORT=${ES_PORT:-9200}
ES_HOME=${ES_HOME:-$root/.cache/elasticsearch-$ES_VERSION}
ES_DATA=${ES_DATA:-$root/.cache/es-data-$ES_PORT}
ES_HEAP=${ES_HEAP:-512m}
ES_CONF=${ES_CONF:-$ES_HOME/config}
ES_SECURITY=${ES_SECURITY:-false}
url=${ES_URL:-http://127.0.0.1:$ES_PORT}
read -r -a curl_args <<<"${ES_CURL_ARGS:-}"

healthy() { curl -fsS "${curl_args[@]}" "$url/_cluster/health?wait_for_status=yellow&timeout=1s" >/dev/null 2>&1; }
if healthy; then exit 0; fi

source "$root/scripts/lib/es-java.sh"

user=root
if [[ $(id -u) -eq 0 ]]; then
  id elasticsearch >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin elasticsearch
  user=elasticsearch
fi
mkdir -p "$ES_DATA/data" "$ES_DATA/logs"
chown -R "$user" "$ES_DATA" "$ES_CONF" 2>/dev/null || true
# ES needs to traverse to its home and data directories.
chmod o+x "$root" "$root/.cache" 2>/dev/null || true

pidfile=$ES_DATA/es.pid
rm -f "$pidfile"
run=(env ES_JAVA_HOME="$java_home" ES_JAVA_OPTS="-Xms$ES_HEAP -Xmx$ES_HEAP" ES_PATH_CONF="$ES_CONF"
     "$ES_HOME/bin/elasticsearch" -d -p "$pidfile"
     -E discovery.type=single-node -E network.host=127.0.0.1 -E http.port="$ES_PORT"
     -E transport.port=$((ES_PORT + 100)) -E path.data="$ES_DATA/data" -E path.logs="$ES_DATA/logs"
     -E xpack.security.enabled="$ES_SECURITY" -E cluster.routing.allocation.disk.threshold_enabled=false
     -E action.destructive_requires_name=false)
if [[ $user == root ]]; then "${run[@]}" >"$ES_DATA/logs/stdout.log" 2>&1
else runuser -u "$user" -- "${run[@]}" >"$ES_DATA/logs/stdout.log" 2>&1; fi

for _ in $(seq 1 240); do
  if healthy; then exit 0; fi
  sleep 0.5
done
echo "elasticsearch did not become healthy on $url within 120 s; see $ES_DATA/logs" >&2
tail -n 30 "$ES_DATA/logs/stdout.log" >&2 || true
exit 1
