#!/usr/bin/env bash
# Makes sure a headless browser for the web console's tests (tests/console) is installed:
# Debian's `chromium` and `chromium-driver`, with apt-get when either is missing. Idempotent and
# quiet; prints the chromedriver path on stdout (and nothing else), so a caller can do
#   FERROMQ_CHROMEDRIVER=$(bash scripts/browser.sh)
# Needs root or passwordless sudo only when something is missing.
set -euo pipefail

log() { echo "browser: $*" >&2; }

have() { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }

if ! have; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || { log "error: chromium is missing and this is not root"; exit 1; }
    sudo="sudo -n"
  fi
  log "installing chromium and chromium-driver (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  # The package lists may be stale or absent on a fresh machine; one update, then the install.
  # Their chatter goes to a file, shown only when something fails.
  out=$(mktemp)
  trap 'rm -f "$out"' EXIT
  if ! { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver; } >"$out" 2>&1; then
    cat "$out" >&2
    log "error: apt-get could not install chromium and chromium-driver"
    exit 1
  fi
  have || { log "error: chromium or chromedriver still missing after apt-get install"; exit 1; }
fi

command -v chromedriver
