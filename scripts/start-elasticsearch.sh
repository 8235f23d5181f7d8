#!/usr/bin/env bash
# Starts the Elasticsearch installed by install-elasticsearch.sh as a single node on 127.0.0.1 and waits until the
# cluster is at least yellow. Idempotent: does nothing when ES already answers on the port.
# Env: ES_VERSION (9.2.4; 8.x runs on JDK 17), ES_PORT (9200; transport on ES_PORT+100),
# ES_HOME (.cache/elasticsearch-<version>),
# ES_DATA (.cache/es-data-<port>), ES_HEAP (512m).
# Security (present in this distribution) is off: TLS and auth are the job of a reverse proxy in the tests.
# ES refuses to run as root, so it runs as the unprivileged user "elasticsearch" (created when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
ES_VERSION=${ES_VERSION:-9.2.4}
ES_PORT=${ES_PORT:-9200}
ES_HOME=${ES_HOME:-$root/.cache/elasticsearch-$ES_VERSION}
ES_DATA=${ES_DATA:-$root/.cache/es-data-$ES_PORT}
ES_HEAP=${ES_HEAP:-512m}
url=http://127.0.0.1:$ES_PORT

healthy() { curl -fsS "$url/_cluster/health?wait_for_status=yellow&timeout=1s" >/dev/null 2>&1; }
if healthy; then exit 0; fi

# 9.x needs a JDK >= 21. 8.x runs on 17 and later JDKs may lack what it needs (the Security Manager is gone
# in 24+), so for 8.x the distribution's own minimum, 17, is preferred.
if [[ $ES_VERSION == 8.* ]]; then
  min_java=17 preferred=(/usr/lib/jvm/java-17-openjdk-amd64 ${JAVA_HOME:-})
else
  min_java=21 preferred=(${JAVA_HOME:-} /usr/lib/jvm/temurin-25-jdk-amd64)
fi
find_java() {
  for candidate in "${preferred[@]}" /usr/lib/jvm/*; do
    [[ -x $candidate/bin/java ]] || continue
    major=$("$candidate/bin/java" -XshowSettings:properties -version 2>&1 |
            sed -n 's/^ *java.specification.version = \([0-9]*\).*/\1/p')
    if [[ -n $major && $major -ge $min_java ]]; then echo "$candidate"; return 0; fi
  done
  echo "no JDK >= $min_java under /usr/lib/jvm" >&2; return 1
}
java_home=$(find_java)

user=root
if [[ $(id -u) -eq 0 ]]; then
  id elasticsearch >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin elasticsearch
  user=elasticsearch
fi
mkdir -p "$ES_DATA/data" "$ES_DATA/logs"
chown -R "$user" "$ES_DATA" "$ES_HOME/config" 2>/dev/null || true
# ES needs to traverse to its home and data directories.
chmod o+x "$root" "$root/.cache" 2>/dev/null || true

pidfile=$ES_DATA/es.pid
rm -f "$pidfile"
run=(env ES_JAVA_HOME="$java_home" ES_JAVA_OPTS="-Xms$ES_HEAP -Xmx$ES_HEAP" ES_PATH_CONF="$ES_HOME/config"
     "$ES_HOME/bin/elasticsearch" -d -p "$pidfile"
     -E discovery.type=single-node -E network.host=127.0.0.1 -E http.port="$ES_PORT"
     -E transport.port=$((ES_PORT + 100)) -E path.data="$ES_DATA/data" -E path.logs="$ES_DATA/logs"
     -E xpack.security.enabled=false -E cluster.routing.allocation.disk.threshold_enabled=false
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
