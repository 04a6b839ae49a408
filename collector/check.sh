#!/usr/bin/env bash
# Static checks of everything in collector/ (for CI and before committing):
#   1. otelcol validate  otelcol-config.yaml, otelcol-agent.yaml, otelcol-gateway.yaml (+ its
#      files overlay)   (builds the collector if needed, see build.sh)
#   2. promtool check config  prometheus.yml   (also checks the rule files it references)
#   3. promtool check rules   rules/*.yml
#   4. promtool test rules    rules/tests/*_test.yml   (one file per rule group)
# Runs every check even after a failure, prints one line per check and a summary,
# and exits non-zero if any failed. The last line is "N passed, N failed".
#
#   collector/check.sh [--no-build]   --no-build: skip step 1 when no binary exists
#
# Env: OTEL_DIST_COLLECTOR_BIN to validate with another collector binary;
#      PROMTOOL (default: promtool on PATH; Debian package `prometheus`).
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROMTOOL="${PROMTOOL:-promtool}"
COLLECTOR_BIN="${OTEL_DIST_COLLECTOR_BIN:-$HERE/_build/otelcol-dist/otelcol-dist}"
no_build=0
[[ "${1:-}" == "--no-build" ]] && no_build=1

passed=0; failed=0; failures=()
log_dir="$(mktemp -d)"; trap 'rm -rf "$log_dir"' EXIT

# run NAME CMD...: run one check quietly; on failure show its output.
run() {
  local name="$1"; shift
  local out="$log_dir/$passed-$failed.log" t0=$SECONDS
  if "$@" >"$out" 2>&1; then
    passed=$((passed + 1)); printf 'PASS  %-55s (%ds)\n' "$name" $((SECONDS - t0))
  else
    failed=$((failed + 1)); failures+=("$name"); printf 'FAIL  %-55s (%ds)\n' "$name" $((SECONDS - t0))
    sed 's/^/      | /' "$out"
  fi
}

cd "$HERE"
command -v "$PROMTOOL" >/dev/null || { echo "check.sh: promtool not found (apt-get install prometheus)"; exit 1; }

# 1. Collector config. validate resolves ${env:...} defaults and checks every component.
if [[ ! -x "$COLLECTOR_BIN" && $no_build -eq 0 ]]; then
  echo "collector binary missing: building it first (several minutes on a cold cache)"
  run "build collector (build.sh)" ./build.sh
fi
if [[ -x "$COLLECTOR_BIN" ]]; then
  run "otelcol validate otelcol-config.yaml" "$COLLECTOR_BIN" validate --config="$HERE/otelcol-config.yaml"
  run "otelcol validate otelcol-agent.yaml" "$COLLECTOR_BIN" validate --config="$HERE/otelcol-agent.yaml"
  run "otelcol validate otelcol-gateway.yaml" "$COLLECTOR_BIN" validate --config="$HERE/otelcol-gateway.yaml"
  run "otelcol validate gateway + otelcol-gateway-files.yaml" env OTELCOL_FILES_DIR="$log_dir" \
    "$COLLECTOR_BIN" validate --config="$HERE/otelcol-gateway.yaml" --config="$HERE/otelcol-gateway-files.yaml"
else
  echo "SKIP  otelcol validate (no collector binary; --no-build)"
fi

# 2-4. Prometheus config and rules.
run "promtool check config prometheus.yml" "$PROMTOOL" check config prometheus.yml
run "promtool check rules rules/*.yml" "$PROMTOOL" check rules rules/*.yml
for test_file in rules/tests/*_test.yml; do
  run "promtool test rules $test_file" "$PROMTOOL" test rules "$test_file"
done
# Every rule group needs its test file (rules/x.yml -> rules/tests/x_test.yml).
for rule_file in rules/*.yml; do
  base="$(basename "$rule_file" .yml)"
  run "has test file rules/tests/${base}_test.yml" test -f "rules/tests/${base}_test.yml"
done

echo
if ((failed)); then
  echo "collector checks FAILED: ${failures[*]}"
fi
echo "check.sh: $passed passed, $failed failed"
((failed == 0))
