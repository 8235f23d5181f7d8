# Sourced by the Elasticsearch scripts: sets java_home to a JDK the distribution runs on.
# 9.x needs a JDK >= 21. 8.x runs on 17 and later JDKs may lack what it needs (the Security Manager is gone
# in 24+), so for 8.x the distribution's own minimum, 17, is preferred. Needs ES_VERSION.
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
