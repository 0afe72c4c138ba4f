#!/usr/bin/env bash
# The referee's load generator (../shared/bench/loadgen) against gatehouse with its *embedded*
# broker — no mosquitto in gatehouse's path — next to the floor relay through mosquitto, in one
# run, at the same rates. Same workload, registry (100,000 residents, 20,000 plates) and table
# columns as bench/compare.sh, plus the CPU time the engine process used over the run (µs per
# event; this machine's figure, the basis of the ARM estimate in the README).
#
# usage: bench/embedded.sh [RATES] [SECONDS]        e.g. bench/embedded.sh 1000,5000 10
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
shared=${SHARED_BENCH:-$here/../shared/bench}
rates=${1:-1000,5000}; secs=${2:-10}
target=${LOADGEN_TARGET:-$HOME/.cache/bench-loadgen}
cargo build --release --quiet --manifest-path "$here/Cargo.toml"
cargo build --release --quiet --manifest-path "$shared/loadgen/Cargo.toml" --target-dir "$target"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
# shellcheck source=bench/common.sh
. "$here/bench/common.sh"
write_lists "$work"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # user + system CPU, in clock ticks

row() { # engine rate pid ticks-before json
  python3 - "$1" "$2" "$3" "$4" "$5" <<'PY'
import json, os, sys
e, rate, pid, before, out = sys.argv[1:6]
try:
    rss = open(f"/proc/{pid}/status").read().split("VmRSS:")[1].split()[0]
    stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    cpu_s = (int(stat[11]) + int(stat[12]) - int(before)) / os.sysconf("SC_CLK_TCK")
except Exception:
    rss, cpu_s = "0", 0.0
try:
    r = json.loads(out)
except Exception:
    print(f"{e:<14} {rate:>7} no result"); sys.exit()
per_event = cpu_s * 1e6 / max(r['received'], 1)
print(f"{e:<14} {r['offered_rate']:>7} {r['received']:>8} {r['missing']:>7} {r['wrong']:>7} {r['p50_us']:>8} {r['p99_us']:>8} {r['p999_us']:>8} {r['max_us']:>8} {rss:>8} {per_event:>8.1f}")
PY
}

printf '%-14s %7s %8s %7s %7s %8s %8s %8s %8s %8s %8s\n' engine rate received missing wrong p50_us p99_us p999_us max_us rss_kb cpu_us/ev
for rate in ${rates//,/ }; do
  # The floor: the referee's relay behind mosquitto.
  port=$(free_port)
  sed "s/__PORT__/$port/" "$shared/peers/mosquitto.conf" >"$work/mosquitto.conf"
  mosquitto -c "$work/mosquitto.conf" >"$work/mosq.log" 2>&1 & mpid=$!; pids+=("$mpid")
  sleep 0.3
  "$target/release/floor" "$port" >"$work/floor.log" 2>&1 & fpid=$!; pids+=("$fpid")
  t0=$(ticks "$fpid")
  out=$("$target/release/loadgen" --port "$port" --rate "$rate" --seconds "$secs" 2>>"$work/loadgen.err" || true)
  row floor "$rate" "$fpid" "$t0" "$out"
  kill "$fpid" "$mpid" 2>/dev/null || true; wait "$fpid" "$mpid" 2>/dev/null || true

  # gatehouse, its own broker inside: the load generator connects to it directly.
  port=$(free_port)
  rm -rf "$work/store"
  write_config "$work" $'mode = "embedded"\nlisten = "127.0.0.1:'"$port"'"' "mqtt://127.0.0.1:$port"
  RUST_LOG=warn "$here/target/release/gatehouse" run --config "$work/gatehouse.toml" >"$work/gh.log" 2>&1 & gpid=$!; pids+=("$gpid")
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  sleep 0.5
  t0=$(ticks "$gpid")
  out=$("$target/release/loadgen" --port "$port" --rate "$rate" --seconds "$secs" 2>>"$work/loadgen.err" || true)
  row gatehouse-emb "$rate" "$gpid" "$t0" "$out"
  kill "$gpid" 2>/dev/null || true; wait "$gpid" 2>/dev/null || true
done
