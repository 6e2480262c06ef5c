#!/usr/bin/env bash
# Compiles android_demo/core (main + tests) with the JDK's javac and runs the JUnit 5 tests with
# the console launcher, without Gradle (Maven Central is unreachable here). Needs Debian's
# default-jdk-headless (or openjdk-17) and junit5. Prints "N passed, N failed" last; exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")"
JAVA_DIR=${JUNIT_JAR_DIR:-/usr/share/java}
LAUNCHER="$JAVA_DIR/junit-platform-console-standalone.jar"
for f in "$LAUNCHER" "$JAVA_DIR/junit-jupiter-api.jar"; do
  [ -f "$f" ] || { echo "missing $f: apt-get install -y junit5" >&2; echo "0 passed, 1 failed"; exit 1; }
done
CP_API="$JAVA_DIR/junit-jupiter-api.jar:$JAVA_DIR/junit-jupiter-params.jar:$JAVA_DIR/opentest4j.jar:$JAVA_DIR/apiguardian-api.jar:$JAVA_DIR/junit-platform-commons.jar"

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
mkdir -p "$OUT/main" "$OUT/test"
# --release 17: the same language level the Gradle build and Android (desugared) use
javac --release 17 -encoding UTF-8 -Xlint:all -Werror -d "$OUT/main" $(find src/main/java -name '*.java')
javac --release 17 -encoding UTF-8 -d "$OUT/test" -cp "$OUT/main:$CP_API" $(find src/test/java -name '*.java')
cp -r src/test/resources/. "$OUT/test/"

set +e
java -Xmx512m -Dfile.encoding=UTF-8 -jar "$LAUNCHER" --disable-banner --details=tree --fail-if-no-tests \
  --class-path "$OUT/main:$OUT/test" --scan-class-path "$OUT/test" >"$OUT/log" 2>&1
status=$?
set -e
cat "$OUT/log"
passed=$(sed -n 's/^\[ *\([0-9]*\) tests successful *\]$/\1/p' "$OUT/log" | tail -1)
failed=$(sed -n 's/^\[ *\([0-9]*\) tests failed *\]$/\1/p' "$OUT/log" | tail -1)
passed=${passed:-0}
failed=${failed:-0}
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi  # launcher error without a count
echo "$passed passed, $failed failed"
exit "$status"
