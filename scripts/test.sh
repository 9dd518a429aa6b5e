#!/usr/bin/env bash
# Runs Airbag's tests on a fresh machine: installs what the tests need that
# cargo does not bring, then `cargo test --locked`. This is README's test
# command, and the one CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# --- Console browser test (tests/console_browser.rs) ----------------------
# Debian's chromium and node/npm from apt when missing; playwright-core from
# npm into tests/browser (committed package-lock.json; it downloads no
# browser: the test drives /usr/bin/chromium).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1 || [ ! -x /usr/bin/chromium ]; then
  as_root=()
  if [ "$(id -u)" -ne 0 ]; then as_root=(sudo); fi
  "${as_root[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y --no-install-recommends chromium nodejs npm
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi

cargo test --locked "$@"
