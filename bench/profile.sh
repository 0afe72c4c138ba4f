#!/usr/bin/env bash
# The profiling figures the README quotes, reproducible:
#   rss        the daemon's RSS under load and its peak since start (VmHWM, which includes the
#              list import at first start): `gatehouse-demo bench` at RATE, 100,000 residents
#   perf       where the daemon's CPU goes at RATE: `perf record` of a `gatehouse run` on the
#              endpoint while the referee's load generator drives it; the top symbols
#
# usage: bench/profile.sh rss|perf [RATE]      e.g. bench/profile.sh rss 5000
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
what=${1:?rss or perf}
rate=${2:-5000}
cd "$here"

case $what in
  rss)
    # Each on its own (-p): the demo's crates never change the box's features.
    cargo build --release --quiet -p gatehouse
    cargo build --release --quiet -p gatehouse-demo
    ./target/release/gatehouse-demo bench --rate "$rate" --seconds 10 --residents 100000
    ;;
  perf)
    command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 2; }
    # Symbols: a release build without stripping, only for this.
    CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
      cargo build --release --quiet -p gatehouse --target-dir target/profile
    target=${LOADGEN_TARGET:-$HOME/.cache/bench-loadgen}
    cargo build -q --release --manifest-path "$here/../shared/bench/loadgen/Cargo.toml" --target-dir "$target"
    work=$(mktemp -d)
    trap 'kill "$gpid" 2>/dev/null || true; rm -rf "$work"' EXIT
    # shellcheck source=bench/common.sh
    . "$here/bench/common.sh"
    write_lists "$work"
    printf 'thermal-1 profile-terminal\ngate-1 profile-gate\n' >"$work/devices.secrets"
    chmod 600 "$work/devices.secrets"
    write_config "$work" $'secrets_file = "devices.secrets"' "mqtt://127.0.0.1:1"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    RUST_LOG=warn target/profile/release/gatehouse run --config "$work/gatehouse.toml" --endpoint-port "$port" 2>"$work/gh.log" & gpid=$!
    sleep 3
    perf record -F 2999 --call-graph dwarf,16384 -p "$gpid" -o "$work/perf.data" -- sleep 6 >/dev/null 2>&1 &
    "$target/release/loadgen" --port "$port" --rate "$rate" --seconds 8 \
      --pub-user thermal-1 --pub-pass profile-terminal --sub-user gate-1 --sub-pass profile-gate \
      --cmd-filter devices/gate-1/cmd
    wait %2 2>/dev/null || sleep 1
    perf report -i "$work/perf.data" --no-children --sort symbol -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | sed 's/ *- *- *$//' | head -30 || true
    echo "--- gatehouse's functions with what they call (share of the daemon's samples):"
    perf report -i "$work/perf.data" --children --sort symbol -g none --percent-limit 1 2>/dev/null |
      grep -E '^ +[0-9].*\[\.\] <?(gatehouse|serde_json|redb)::' | cut -c1-160 | head -25 || true
    ;;
  *) echo "usage: bench/profile.sh rss|perf [RATE]" >&2; exit 2 ;;
esac
