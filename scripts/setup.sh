#!/usr/bin/env bash
# One command sets up a fresh Debian machine: the Python package with every extra (CPU torch
# 2.13 from the pin in pyproject.toml), plus the Debian packages some tests drive for real:
# chromium (the HTML report is opened in a headless browser), a JDK with JUnit 5 (the Android
# demo's JVM core), an ssh client and Node.js (device runners). System packages are skipped when apt-get or root is not available.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v javac >/dev/null 2>&1 || need+=(default-jdk-headless)
[ -f /usr/share/java/junit-platform-console-standalone.jar ] || need+=(junit5)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v node >/dev/null 2>&1 || need+=(nodejs npm)
if [ ${#need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[setup] apt-get install ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "[setup] not root or no apt-get: install ${need[*]} yourself for the browser and JVM tests" >&2
  fi
fi

echo "[setup] pip install -e '.[dev]'"
python -m pip install -q -e '.[dev]'
