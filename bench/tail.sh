#!/usr/bin/env bash
# Where the tail comes from (issue 28). gatehouse on its own endpoint under the referee's load
# generator, its uplink to a mosquitto of this script's own (as compare.sh's direct row), and per
# thread group — runtime workers, the outbox writer, the rest — the CPU time and the context
# switches per event (voluntary: it waited for something; involuntary: it was preempted), read
# from /proc/PID/task/*/{stat,status} before and after the load. The load generator's own
# latency line comes first. Environment variables pass through to the daemon, so one change is
# tried at a time: GATEHOUSE_BENCH_WORKERS=1, GATEHOUSE_BENCH_WRITER_QUIET=0 (commits never quiet), …
#
# TAIL_ENGINE=minimal runs examples/minimal_endpoint.rs instead (the calibration: parse, check,
# answer inline on one thread, nothing durable); TAIL_ENGINE=minimal-durable adds its durable work
# (group commit with an fsync on a writer thread, PUBACK after the commit); TAIL_ENGINE=minimal-uplink
# adds the dedupe window and the uplink (each commit read back, one QoS 1 batch, delete after PUBACK).
# The uplink's mosquitto is measured too (line `uplink-broker`).
# TAIL_BIN=path runs that gatehouse binary instead (a build with symbols, for perf).
# TAIL_METRICS=1 turns the daemon's /metrics on and prints, after the load, its decision-latency
# histogram (device message read -> gate command handed on) as cumulative shares.
# TAIL_PERF_SCHED=S records `perf sched` for S seconds from a third of the way into the load and
# prints per task how long it waited for a core after waking (p50/p90/p99/max) and how long it ran.
# TAIL_STRACE=S counts the engine's system calls (all threads) for S seconds from a third of the way
# into the load and prints them per event (strace -c; it slows the engine while attached).
# TAIL_PERF=S samples the engine's threads with `perf record -g` for S seconds from a third of the
# way in and prints where their time went (kernel/user, by library, the top symbols); with
# TAIL_BIN=target/profile/release/gatehouse (bench/profile.sh perf's build) the symbols are named.
# TAIL_PERF_KEEP=FILE keeps the recording (e.g. `perf report -i FILE --comm gh-writer`).
# TAIL_UPLINK=none (gatehouse only) points the uplink at a closed port (records stay in the outbox: the uplink's
# work and its broker's leave the machine); TAIL_SED='sed expression' edits the config.
#
# usage: bench/tail.sh [RATE] [SECONDS] [RUNS]        e.g. GATEHOUSE_BENCH_WORKERS=1 bench/tail.sh 5000 20 3
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
rate=${1:-5000}
secs=${2:-20}
runs=${3:-3}
[[ -z ${TAIL_BIN:-} ]] && cargo build --release --quiet -p gatehouse --manifest-path "$here/Cargo.toml"
[[ ${TAIL_ENGINE:-} == minimal* ]] && cargo build --release --quiet -p gatehouse --example minimal_endpoint --manifest-path "$here/Cargo.toml"
target=${LOADGEN_TARGET:-$HOME/.cache/bench-loadgen}
cargo build -q --release --manifest-path "$here/../shared/bench/loadgen/Cargo.toml" --target-dir "$target"
work=$(mktemp -d)
gpid= upid=
trap '[ -n "$gpid" ] && kill "$gpid" 2>/dev/null; [ -n "$upid" ] && kill "$upid" 2>/dev/null; rm -rf "$work"' EXIT
# shellcheck source=bench/common.sh
. "$here/bench/common.sh"
write_lists "$work"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
uport=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\nmax_queued_messages 1000000\n' "$uport" >"$work/uplink-mosquitto.conf"
mosquitto -c "$work/uplink-mosquitto.conf" >"$work/uplink-mosquitto.log" 2>&1 & upid=$!
printf 'thermal-1 tail-terminal\ngate-1 tail-gate\n' >"$work/devices.secrets"
chmod 600 "$work/devices.secrets"
uplink="mqtt://127.0.0.1:$uport"
[[ ${TAIL_UPLINK:-} == none ]] && uplink="mqtt://127.0.0.1:$(free_port)"
write_config "$work" $'secrets_file = "devices.secrets"' "$uplink"
[[ -n ${TAIL_SED:-} ]] && sed -i "$TAIL_SED" "$work/gatehouse.toml"
mport=$(free_port)
[[ -n ${TAIL_METRICS:-} ]] && printf '\n[metrics]\nlisten = "127.0.0.1:%s"\n' "$mport" >>"$work/gatehouse.toml"

# Per thread: name, CPU ticks (utime + stime), voluntary and involuntary switches.
threads() { # pid
  for t in /proc/"$1"/task/*; do
    printf '%s %s %s %s\n' "$(tr ' ' '_' <"$t/comm")" \
      "$(awk '{print $14 + $15}' "$t/stat")" \
      "$(awk '/^voluntary_ctxt_switches/ {print $2}' "$t/status")" \
      "$(awk '/^nonvoluntary_ctxt_switches/ {print $2}' "$t/status")"
  done
}

for ((run = 1; run <= runs; run++)); do
  rm -rf "$work/store"
  port=$(free_port)
  if [[ ${TAIL_ENGINE:-} == minimal ]]; then
    "$here/target/release/examples/minimal_endpoint" "$port" 2>"$work/gh.log" & gpid=$!
  elif [[ ${TAIL_ENGINE:-} == minimal-durable ]]; then
    rm -rf "$work/minimal"
    "$here/target/release/examples/minimal_endpoint" "$port" --durable "$work/minimal" 2>"$work/gh.log" & gpid=$!
  elif [[ ${TAIL_ENGINE:-} == minimal-uplink ]]; then
    rm -rf "$work/minimal"
    "$here/target/release/examples/minimal_endpoint" "$port" --durable "$work/minimal" --uplink "$uport" 2>"$work/gh.log" & gpid=$!
  else
    RUST_LOG=warn "${TAIL_BIN:-$here/target/release/gatehouse}" run --config "$work/gatehouse.toml" --endpoint-port "$port" 2>"$work/gh.log" & gpid=$!
  fi
  sleep 3
  threads "$gpid" >"$work/before"
  threads "$upid" | sed 's/^[^ ]*/uplink-broker/' >>"$work/before"
  # The observers start a third of the way into the load, each in the background.
  later() { (sleep $((secs / 3)) && exec "$@") >/dev/null 2>&1 & }
  spid= tpid= ppid=
  rm -f "$work/sched.data" "$work/strace" "$work/perf.data"
  [[ -n ${TAIL_PERF_SCHED:-} ]] && later perf sched record -a -o "$work/sched.data" -- sleep "$TAIL_PERF_SCHED" && spid=$!
  [[ -n ${TAIL_STRACE:-} ]] && later timeout -s INT "${TAIL_STRACE%s}" strace -c -f -o "$work/strace" -p "$gpid" && tpid=$!
  [[ -n ${TAIL_PERF:-} ]] && later perf record -F 1999 -g -p "$gpid" -o "$work/perf.data" -- sleep "$TAIL_PERF" && ppid=$!
  line=$("$target/release/loadgen" --port "$port" --rate "$rate" --seconds "$secs" \
    --pub-user thermal-1 --pub-pass tail-terminal --sub-user gate-1 --sub-pass tail-gate \
    --cmd-filter devices/gate-1/cmd)
  threads "$gpid" >"$work/after"
  threads "$upid" | sed 's/^[^ ]*/uplink-broker/' >>"$work/after"
  hist=
  if [[ -n ${TAIL_METRICS:-} && -z ${TAIL_ENGINE:-} ]]; then
    hist=$(curl -s "http://127.0.0.1:$mport/metrics" | python3 -c '
import sys
b = [(l.split("le=\"")[1].split("\"")[0], float(l.split()[-1])) for l in sys.stdin if l.startswith("gatehouse_decision_latency_seconds_bucket")]
n = b[-1][1] or 1
print("  decision latency: " + ", ".join(f"≤{float(le)*1e6:.0f} µs {c/n:.2%}" for le, c in b[:6]) + f" (of {n:.0f})")')
  fi
  kill "$gpid"; wait "$gpid" 2>/dev/null || true; gpid=
  events=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["received"])' "$line")
  echo "run $run: $line"
  [[ -n $hist ]] && echo "$hist"
  if [[ -n $tpid ]]; then
    wait "$tpid" || true
    [[ -s $work/strace ]] || echo "  (strace recorded nothing: not installed, or not allowed to attach)"
    # Per event at the offered rate over the attached seconds (TAIL_STRACE in whole seconds).
    [[ -s $work/strace ]] && awk -v n="$((rate * ${TAIL_STRACE%s}))" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" && $4 / n >= 0.01 {printf "  syscall %-16s %5.2f/event\n", $NF, $4 / n}' "$work/strace" || true
  fi
  if [[ -n $ppid ]]; then
    wait "$ppid" || true
    [[ -s $work/perf.data ]] || echo "  (perf recorded nothing: not installed, or not allowed)"
    [[ -n ${TAIL_PERF_KEEP:-} && -s $work/perf.data ]] && cp "$work/perf.data" "$TAIL_PERF_KEEP"
    perf report -i "$work/perf.data" --no-children --sort dso -g none 2>/dev/null |
      awk '/^ +[0-9]/ && n++ < 8 {print "  dso " $0}' || true
    perf report -i "$work/perf.data" --no-children --sort sym -g none 2>/dev/null |
      awk -v top="${TAIL_PERF_TOP:-25}" '/^ +[0-9]/ && n++ < top {print "  sym " $0}' || true
  fi
  if [[ -n $spid ]]; then
    wait "$spid" || true
    [[ -s $work/sched.data ]] || echo "  (perf sched recorded nothing: not installed, or not allowed)"
    perf sched timehist -i "$work/sched.data" 2>/dev/null | python3 -c '
import sys, collections
delay, ran = collections.defaultdict(list), collections.defaultdict(list)
for line in sys.stdin:
    f = line.split()
    try:
        name, d, r = f[2].split("[")[0], float(f[4]), float(f[5])
    except (IndexError, ValueError):
        continue
    if name != "<idle>":
        delay[name].append(d * 1000); ran[name].append(r * 1000)
for name in sorted(delay, key=lambda k: -len(delay[k]))[:5]:
    d, r = sorted(delay[name]), sorted(ran[name]); n = len(d)
    print(f"  {name:16} waited for a core p50 {d[n//2]:.0f} p90 {d[n*9//10]:.0f} p99 {d[n*99//100]:.0f} max {d[-1]:.0f} µs; ran p50 {r[n//2]:.0f} p99 {r[n*99//100]:.0f} µs ({n} runs)")'
  fi
  # Thread groups: the runtime's workers, the writer, everything else (blocking pool, main).
  python3 - "$work/before" "$work/after" "$events" <<'PY'
import sys
hz = 100  # USER_HZ: /proc's ticks
def read(path):
    out = {}
    for line in open(path):
        name, ticks, vol, invol = line.split()
        out.setdefault(name, [0, 0, 0])
        for i, v in enumerate((int(ticks), int(vol), int(invol))):
            out[name][i] += v
    return out
before, after, events = read(sys.argv[1]), read(sys.argv[2]), max(int(sys.argv[3]), 1)
for name in sorted(after):
    b = before.get(name, [0, 0, 0])
    d = [a - x for a, x in zip(after[name], b)]
    if d == [0, 0, 0]:
        continue
    print(f"  {name:16} cpu {d[0] * 1e6 / hz / events:6.1f} µs/event   voluntary {d[1] / events:5.2f}/event   involuntary {d[2] / events:5.3f}/event")
PY
done
