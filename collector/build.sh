#!/usr/bin/env bash
# Build the otel-dist collector distribution from builder-config.yaml.
#
#   collector/build.sh            build if needed, else reuse the existing binary
#   collector/build.sh --force    always rebuild
#
# Output: collector/_build/otelcol-dist/otelcol-dist (git-ignored).
# The last line printed is a summary with the binary path and the elapsed time.
#
# Env knobs:
#   BUILD_JOBS   parallel Go compile jobs (default 2: the build is CPU- and RAM-heavy
#                and this machine is shared with test runs)
#   GOBIN        where to install the builder if it is missing, under ocb-<version>/ (default: $(go env GOPATH)/bin)
set -euo pipefail

BUILDER_VERSION=v0.161.0          # must equal the core component version in the manifest
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MANIFEST="$HERE/builder-config.yaml"
BUILD_DIR="$HERE/_build"
BIN="$BUILD_DIR/otelcol-dist/otelcol-dist"

force=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

start=$(date +%s)
log() { printf '[build.sh %s +%3ds] %s\n' "$(date +%H:%M:%S)" "$(( $(date +%s) - start ))" "$*"; }

# --- 1. reuse --------------------------------------------------------------
# The binary depends only on the manifest (the collector *config* is read at run time).
if [[ $force -eq 0 && -x "$BIN" && "$BIN" -nt "$MANIFEST" ]]; then
  log "binary is newer than builder-config.yaml: reusing it (use --force to rebuild)"
  log "SUMMARY: ready $BIN (reused, $(( $(date +%s) - start ))s)"
  exit 0
fi

# --- 2. builder ------------------------------------------------------------
command -v go >/dev/null || { echo "build.sh: Go toolchain not found on PATH" >&2; exit 1; }
# A folder per builder version: worktrees and CI runs on one machine that pin different
# releases must not keep reinstalling one shared `builder` over each other.
gobin="${GOBIN:-$(go env GOBIN)}"
gobin="${gobin:-$(go env GOPATH)/bin}/ocb-$BUILDER_VERSION"
builder="$gobin/builder"
# Reinstall when the builder is missing or is another release: the builder pins
# the core otelcol module to its own version, so a mismatch breaks the build.
if [[ ! -x "$builder" ]] || ! "$builder" version 2>&1 | grep -q "${BUILDER_VERSION#v}"; then
  log "installing builder $BUILDER_VERSION into $gobin"
  GOBIN="$gobin" go install "go.opentelemetry.io/collector/cmd/builder@$BUILDER_VERSION"
fi
log "builder: $builder ($("$builder" version 2>&1 | head -1))"

# --- 3. build --------------------------------------------------------------
# Phases (from the builder's own log): generate sources -> go mod tidy/download -> compile.
# The compile phase prints nothing for minutes, so a heartbeat shows it is alive.
mkdir -p "$BUILD_DIR"        # builder creates output_path non-recursively
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-p=${BUILD_JOBS:-2}"
log "building with GOFLAGS='$GOFLAGS' (cold builds take several minutes)"

( while sleep 30; do log "... still building"; done ) &
heartbeat=$!
trap 'kill "$heartbeat" 2>/dev/null || true' EXIT

cd "$HERE"                   # output_path in the manifest is relative to here
rc=0
"$builder" --config "$MANIFEST" 2>&1 | while IFS= read -r line; do
  log "builder: ${line}"
done || rc=$?
# pipefail makes the pipeline's status the builder's.
[[ $rc -eq 0 ]] || { log "FAILED: builder exited with status $rc"; exit 1; }
[[ -x "$BIN" ]] || { log "FAILED: builder finished but $BIN is missing"; exit 1; }
touch "$BIN"                 # make the reuse check (binary newer than manifest) hold

log "SUMMARY: ready $BIN (built, $(( $(date +%s) - start ))s)"
