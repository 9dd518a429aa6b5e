#!/usr/bin/env bash
# The alert storm: `airbag load --storm N` (N instruments crash at once, N
# alerts raised together) against a fresh server per run, with the journal
# under `fsync = "always"`, an interval and none, alternating, in one run;
# then the same with every fdatasync made 1 ms slower on purpose.
#
#   scripts/storm.sh [N] [RUNS] [BIN] [BASE_BIN]     (default 10000, 3, target/release/airbag)
#
# Needs gcc (for the shim) and python3. BASE_BIN, if given, is another build (e.g. main's) run the same way beside
# BIN, alternating, for a same-run comparison.
#
# The server runs under an LD_PRELOAD shim (scripts/slow_sync.c, compiled
# here with gcc into a temporary folder) that counts fdatasync/fsync calls
# and, in the slow runs, adds SLOW_US (default 1000) µs to each. The
# subscriber queue is raised to 65536 so that a subscriber of N alerts is
# not disconnected for lagging (the default, 4096, is below a 10,000-alert
# storm without a journal).
#
# One line per run: policy, slow or not, fdatasync calls during the load,
# alerts received, and receive → subscriber p50/p99/max (µs), then the
# medians per case.
set -euo pipefail

n="${1:-10000}"
runs="${2:-3}"
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${3:-$root/target/release/airbag}"
base="${4:-}"
slow_us="${SLOW_US:-1000}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
gcc -O2 -shared -fPIC -o "$work/slow_sync.so" "$root/scripts/slow_sync.c" -ldl
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
addr="127.0.0.1:$port"
results="$work/results"

one() { # one BIN LABEL POLICY DELAY_US
  local b="$1" label="$2" policy="$3" delay="$4" dir="$work/run"
  rm -rf "$dir" && mkdir -p "$dir"
  {
    echo "subscriber_queue = 65536"
    case "$policy" in
      always) echo "data_dir = \"$dir/data\""; printf '[journal]\nfsync = "always"\n' ;;
      interval) echo "data_dir = \"$dir/data\""; printf '[journal]\nfsync = 100\n' ;;
      none) ;;
    esac
  } >"$dir/airbag.toml"
  SLOW_SYNC_US="$delay" SLOW_SYNC_COUNTS="$dir/counts" LD_PRELOAD="$work/slow_sync.so" \
    "$b" serve --listen "$addr" --metrics-listen 127.0.0.1:0 --rules "$root/rules" --config "$dir/airbag.toml" \
    >"$dir/server.log" 2>&1 &
  local server=$!
  for _ in $(seq 100); do
    "$b" health --addr "$addr" >/dev/null 2>&1 && break
    sleep 0.1
  done
  local before after summary
  before="$(od -An -tu8 -N8 "$dir/counts" | tr -d ' ')"
  summary="$("$b" load --addr "$addr" --instruments "$n" --crash-every 0 --market-crash-at 1 --duration 2 --rate 100000 \
    | grep '^summary:')" # = --storm N, spelled out for builds without it
  after="$(od -An -tu8 -N8 "$dir/counts" | tr -d ' ')"
  kill "$server"; wait "$server" || true
  field() { grep -oE " $1=[^ ]+" <<<"$summary" | cut -d= -f2 || echo n/a; }
  printf '%-10s %-9s %-5s fdatasync=%-6s alerts=%-6s missing=%-5s delivered_p50_us=%-7s server_max_us=%-7s delivered_p99_us=%-7s delivered_max_us=%s\n' \
    "$label" "$policy" "$([ "$delay" -gt 0 ] && echo slow || echo disk)" "$((after - before))" \
    "$(field alerts)" "$(field missing)" "$(field delivered_p50_us)" "$(field server_max_us)" "$(field delivered_p99_us)" \
    "$(field delivered_max_us)" | tee -a "$results"
}

for _ in $(seq "$runs"); do
  for delay in 0 "$slow_us"; do
    for policy in always interval none; do
      [ "$policy" = none ] && [ "$delay" -gt 0 ] && continue
      one "$bin" new "$policy" "$delay"
      [ -n "$base" ] && one "$base" base "$policy" "$delay"
    done
  done
done

echo "medians over $runs runs:"
python3 - "$results" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(lambda: collections.defaultdict(list))
for line in open(sys.argv[1]):
    parts = line.split()
    key = " ".join(parts[:3])
    for kv in parts[3:]:
        k, v = kv.split("=")
        if v != "n/a":
            rows[key][k].append(float(v))
for key in sorted(rows):
    print(key, " ".join(f"{k}={statistics.median(v):.0f}" for k, v in rows[key].items()))
PY
