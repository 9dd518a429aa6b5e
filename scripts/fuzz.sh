#!/usr/bin/env bash
# Fuzzes Airbag's hostile inputs for a bounded time:
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     (default 60)
#
# With a nightly toolchain and cargo-fuzz, runs each cargo-fuzz target in
# fuzz/ (rule_file, expression, tick_batch) for SECONDS_PER_TARGET seconds,
# starting from a seed corpus (fuzz/corpus/, written by fuzz/src/seeds.rs).
# A crash leaves its input in fuzz/artifacts/TARGET/ and the script exits
# non-zero; reproduce with
#   cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-...
#
# Without nightly or cargo-fuzz it says so and falls back to the proptest
# runs of the same properties on the stable toolchain
# (tests/fuzz_inputs.rs) with many more cases than CI uses.
set -euo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "usage: $0 [SECONDS_PER_TARGET]" >&2
  exit 2
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
targets=(rule_file expression tick_batch)

fallback() {
  echo "fuzz.sh: $1" >&2
  echo "fuzz.sh: falling back to the proptest fuzzing on stable (tests/fuzz_inputs.rs)." >&2
  # About 1,000 cases per property per minute asked for, at least 1,000.
  local cases=$(( seconds * 1000 / 60 ))
  [ "$cases" -lt 1000 ] && cases=1000
  PROPTEST_CASES="$cases" exec cargo test --release --locked --test fuzz_inputs
}

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  fallback "no nightly toolchain: cargo-fuzz needs one (rustup toolchain install nightly)."
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  fallback "cargo-fuzz is not installed (cargo install cargo-fuzz)."
fi

echo "fuzz.sh: $(rustup run nightly rustc --version), $(cargo fuzz --version)"
# Builds every binary of fuzz/ (the targets and the seed writer) with the
# fuzzing flags, once; then writes the seed corpus.
cargo +nightly fuzz build
host="$(rustup run nightly rustc -vV | sed -n 's/^host: //p')"
"fuzz/target/$host/release/seeds"
failed=()
for target in "${targets[@]}"; do
  echo "fuzz.sh: $target for ${seconds}s"
  mkdir -p "fuzz/corpus/$target"
  if ! cargo +nightly fuzz run "$target" "fuzz/corpus/$target" -- \
      -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=4096 -print_final_stats=1; then
    failed+=("$target")
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz.sh: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz.sh: no failures in ${#targets[@]} targets × ${seconds}s"
