#!/usr/bin/env bash
# Runs ../shared/bench/compare.sh (floor relay, Node-RED, gatehouse on one mosquitto, same load)
# with gatehouse configured as that referee expects: device side and uplink on the referee's
# broker, one lane (thermal-1 hikvision-acs-event → gate-1 generic-gate-mqtt), 100,000 residents
# and 20,000 plates (the registry issue 7 sizes the box for), a fresh store for every run.
#
# usage: bench/compare.sh [RATES] [SECONDS] [ENGINES]     e.g. bench/compare.sh 1000,5000 10
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
referee=${REFEREE:-$here/../shared/bench/compare.sh}
cargo build --release --quiet --manifest-path "$here/Cargo.toml"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# shellcheck source=bench/common.sh
. "$here/bench/common.sh"
write_lists "$work"
# Both on the referee's broker: `--broker-port` replaces the port.
write_config "$work" $'mode = "external"\nurl = "mqtt://127.0.0.1:1883"' "mqtt://127.0.0.1:1883"
export ENGINE_CMD="sh -c 'rm -rf $work/store; RUST_LOG=warn exec $here/target/release/gatehouse run --config $work/gatehouse.toml --broker-port {port}'"
"$referee" "${1:-1000,5000}" "${2:-10}" "${3:-floor,node-red,engine}"
