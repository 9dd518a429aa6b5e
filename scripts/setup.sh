#!/usr/bin/env bash
# Installs what Airbag's build and tests need beyond the Rust toolchain, on
# a fresh Debian machine; does nothing for what is already there. With
# `--build-only`, only what building and running the service needs (cmake,
# libssl-dev, pkg-config).
#
# - cmake and libssl-dev (apt): librdkafka is built from source and linked
#   statically by the `rdkafka` crate, with TLS through the system OpenSSL.
# - chromium, nodejs, npm (apt) and playwright-core (npm ci in
#   tests/browser, committed package-lock.json; it downloads no browser):
#   the console's browser test drives /usr/bin/chromium.
# - tansu 0.6.0, a Kafka-protocol broker, for the Kafka tests: built once
#   with cargo into ~/.cache/airbag-tools/tansu-0.6.0 and kept there
#   (about 18 minutes on 2 cores the first time).
# - kubernetes-validate (PyPI, pinned; it carries the Kubernetes schemas) in
#   a venv at ~/.cache/airbag-tools/venv, and systemd-analyze (apt
#   `systemd`): tests/deploy_manifests.rs checks deploy/ with them.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
[ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
build_only=false
[ "${1:-}" = "--build-only" ] && build_only=true
if ! $build_only; then
  command -v node >/dev/null 2>&1 || need+=(nodejs)
  command -v npm >/dev/null 2>&1 || need+=(npm)
  [ -x /usr/bin/chromium ] || need+=(chromium)
  command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
  # The venv for kubernetes-validate, below: Debian's python3 may come
  # without venv and pip.
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    need+=(python3-venv python3-pip)
  fi
fi
if [ ${#need[@]} -gt 0 ]; then
  as_root=()
  if [ "$(id -u)" -ne 0 ]; then as_root=(sudo); fi
  "${as_root[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y --no-install-recommends "${need[@]}"
fi

if $build_only; then
  exit 0
fi

if [ ! -d tests/browser/node_modules/playwright-core ]; then
  (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi

tansu_root="$HOME/.cache/airbag-tools/tansu-0.6.0"
if [ ! -x "$tansu_root/bin/tansu" ]; then
  CARGO_TARGET_DIR="$HOME/.cache/airbag-tools/tansu-build" \
    cargo install tansu --version 0.6.0 --locked --features dynostore --root "$tansu_root"
  rm -rf "$HOME/.cache/airbag-tools/tansu-build"
fi

# --- deploy/ validation: kubernetes-validate in a cached venv ---------------
# tests/deploy_manifests.rs runs $AIRBAG_KUBERNETES_VALIDATE, by default the
# binary below. Installed once; a new pinned version makes a new venv.
k8s_validate_version=1.37.0
venv="$HOME/.cache/airbag-tools/venv"
if ! "$venv/bin/kubernetes-validate" --version 2>/dev/null | grep -qx "$k8s_validate_version"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$k8s_validate_version"
fi
