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
# - tansu 0.6.0, a Kafka-protocol broker, for the Kafka tests, with the
#   fixes in scripts/tansu/ (curl and patch from apt fetch and apply them):
#   built once with cargo into ~/.cache/airbag-tools/tansu-0.6.0-fetchfix
#   and kept there (about 18 minutes on 2 cores the first time).
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
  command -v curl >/dev/null 2>&1 || need+=(curl ca-certificates)
  command -v patch >/dev/null 2>&1 || need+=(patch)
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

tansu_root="$HOME/.cache/airbag-tools/tansu-0.6.0-fetchfix"
if [ ! -x "$tansu_root/bin/tansu" ]; then
  # tansu 0.6.0 from crates.io with scripts/tansu/*.patch applied to its
  # storage crate (see scripts/tansu/README.md), built once.
  tansu_src="$HOME/.cache/airbag-tools/tansu-src"
  rm -rf "$tansu_src" && mkdir -p "$tansu_src"
  for crate in tansu tansu-storage; do
    curl -sSfL --retry 3 "https://static.crates.io/crates/$crate/$crate-0.6.0.crate" | tar -xz -C "$tansu_src"
  done
  for fix in scripts/tansu/*.patch; do
    patch -d "$tansu_src/tansu-storage-0.6.0" -p1 --quiet < "$fix"
  done
  printf '\n[patch.crates-io]\ntansu-storage = { path = "../tansu-storage-0.6.0" }\n' >> "$tansu_src/tansu-0.6.0/Cargo.toml"
  CARGO_TARGET_DIR="$HOME/.cache/airbag-tools/tansu-build" \
    cargo build --release --features dynostore --manifest-path "$tansu_src/tansu-0.6.0/Cargo.toml"
  install -D "$HOME/.cache/airbag-tools/tansu-build/release/tansu" "$tansu_root/bin/tansu"
  rm -rf "$HOME/.cache/airbag-tools/tansu-build" "$tansu_src"
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
