#!/usr/bin/env bash
# Runs Airbag's tests on a fresh machine: installs what they need beyond
# cargo (scripts/setup.sh: apt packages, playwright-core, the tansu Kafka
# broker), then `cargo test --locked`. This is README's test command, and
# the one CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --locked "$@"
