#!/usr/bin/env bash
# Nightly parity: run the device matrix, publish the combined report, fail on regression.
#
#   scripts/nightly.sh [devices.toml]
# Environment:
#   EMBG_HISTORY   where every run's report.json is kept (default ./nightly/history); the last
#                  run there is the baseline of the next one unless EMBG_BASELINE is set
#   EMBG_BASELINE  a fixed baseline report.json instead of the history's last run
#   EMBG_PUBLISH   directory the report is published to (default ./nightly/latest), e.g. a
#                  web server's docroot; replaced atomically (rename), never half-written
#   EMBG_MODEL     --model, when the bundles' manifests should not be trusted for it
# Exit status: that of embg-validate: 0 pass, 1 a regression/threshold failure or a device failure
# (the published report is then marked PARTIAL and says per combination what ran), 2 bad input.
set -euo pipefail

devices=${1:-devices.toml}
history=${EMBG_HISTORY:-nightly/history}
publish=${EMBG_PUBLISH:-nightly/latest}
stamp=$(date -u +%Y%m%dT%H%M%SZ)
work=$(mktemp -d "${TMPDIR:-/tmp}/embg-nightly-$stamp.XXXXXX")
trap 'rm -rf "$work"' EXIT

args=(--devices "$devices" --history "$history" --report "$work/report")
[ -n "${EMBG_BASELINE:-}" ] && args+=(--baseline "$EMBG_BASELINE")
[ -n "${EMBG_MODEL:-}" ] && args+=(--model "$EMBG_MODEL")

set +e
embg-validate "${args[@]}"
status=$?
set -e

if [ -f "$work/report/report.json" ]; then
  mkdir -p "$(dirname "$publish")"
  staged="$publish.new-$stamp"
  cp -r "$work/report" "$staged"
  rm -rf "$publish.old"
  [ -e "$publish" ] && mv "$publish" "$publish.old"
  mv "$staged" "$publish"
  rm -rf "$publish.old"
  echo "[nightly] report published: $publish/report.html (exit $status)"
else
  echo "[nightly] no report written (exit $status): bad input, see above" >&2
fi
exit "$status"
