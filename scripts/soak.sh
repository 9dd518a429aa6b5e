#!/usr/bin/env bash
# A soak run: `airbag serve` under `airbag load` for a long time, with the
# server's resident memory (VmRSS from /proc/PID/status) sampled every
# second.
#
#   scripts/soak.sh [DURATION_S] [RATE_TICKS_PER_S]      (default 300, 100000)
#
# Environment:
#   WARMUP=S        seconds of load counted as warm-up (default 30)
#   INSTRUMENTS=N   instruments `load` sends (default 2000)
#   CRASH_EVERY=S   seconds between crashes (default 0.05; with 2000
#                   instruments an instrument crashes again only after 100 s)
#   CONFIG=FILE     a config file for `airbag serve` (default: none, the
#                   defaults of deploy/airbag.toml)
#   OUT=FILE        where the samples go (default: a temporary file)
#
# The alert ring (`alert_ring`, 100,000 alerts by default) fills as alerts
# are raised, so the server grows until it is full; to see the plateau in
# a short run, give a config with a small ring (e.g. `alert_ring = 2000`).
#
# Prints one line per sample (`t_s rss_kib`), `load`'s own report, and a
# summary: RSS before load, after warm-up, at the end, the peak after
# warm-up, and the growth from warm-up to the end (total and per minute).
# Linux only. Builds the release binary first.
set -euo pipefail

duration="${1:-300}"
rate="${2:-100000}"
warmup="${WARMUP:-30}"
instruments="${INSTRUMENTS:-2000}"
crash_every="${CRASH_EVERY:-0.05}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if [ "$warmup" -ge "$duration" ]; then
  echo "soak.sh: WARMUP ($warmup s) must be shorter than the run ($duration s)" >&2
  exit 2
fi
cargo build --release --locked --quiet
bin="$root/target/release/airbag"
work="$(mktemp -d)"
samples="${OUT:-$work/rss.tsv}"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
addr="127.0.0.1:$port"

serve_args=(serve --listen "$addr" --metrics-listen 127.0.0.1:0 --rules rules)
[ -n "${CONFIG:-}" ] && serve_args+=(--config "$CONFIG")
"$bin" "${serve_args[@]}" >"$work/server.log" 2>&1 &
server=$!
sampler=""
cleanup() {
  [ -n "$sampler" ] && kill "$sampler" 2>/dev/null || true
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
}
trap cleanup EXIT

for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
  sleep 0.1
done

rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$server/status"; }
before="$(rss)"
echo "soak.sh: server pid $server on $addr, RSS before load ${before} KiB; sampling into $samples"
: >"$samples"
start="$(date +%s)"
(
  # One sample a second, stamped with the seconds since load started.
  while kill -0 "$server" 2>/dev/null; do
    printf '%d\t%s\n' "$(( $(date +%s) - start ))" "$(rss)" >>"$samples"
    sleep 1
  done
) &
sampler=$!

"$bin" load --addr "http://$addr" --rate "$rate" --duration "$duration" \
  --instruments "$instruments" --crash-every "$crash_every" --server-pid "$server" | tee "$work/load.txt"

kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
sampler=""
cat "$samples"
awk -v warmup="$warmup" -v before="$before" -v duration="$duration" '
  # The first sample at or after the warm-up is the baseline.
  { rss[$1] = $2; last = $1 }
  $1 >= warmup && w == "" { w = $2 }
  $1 >= warmup && $2 > peak { peak = $2 }
  END {
    end = rss[last]
    minutes = (last - warmup) / 60
    printf "soak summary: duration_s=%d samples=%d rss_before_kib=%d rss_warmup_kib=%d rss_end_kib=%d rss_peak_after_warmup_kib=%d growth_kib=%d growth_kib_per_min=%.0f\n",
      duration, NR, before, w, end, peak, end - w, (minutes > 0 ? (end - w) / minutes : 0)
  }' "$samples"
