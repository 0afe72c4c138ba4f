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
{
  echo "person_id,household"
  for ((i = 0; i < 100000; i++)); do printf 'R%06d,H%05d\n' "$i" $((i / 3)); done
} >"$work/residents.csv"
{
  echo "plate,kind,household,valid_until,lockdown_allowed"
  for ((i = 0; i < 20000; i++)); do printf '粤B%05d,resident,H%05d,,\n' "$i" $((i % 33333)); done
} >"$work/plates.csv"
cat >"$work/gatehouse.toml" <<TOML
[gateway]
id = "bench-gw"
city = "3301"
district = "330106"
street = "330106001"
community = "330106001001"

[device_broker]
mode = "external"
url = "mqtt://127.0.0.1:1883"   # replaced by --broker-port

[uplink]
url = "mqtt://127.0.0.1:1883"   # replaced by --broker-port

[store]
dir = "store"

[registry]
import = "residents.csv"
plates = "plates.csv"

[[lanes]]
id = "bench-lane"

[[lanes.devices]]
id = "thermal-1"
role = "thermal"
profile = "hikvision-acs-event"

[[lanes.devices]]
id = "gate-1"
role = "turnstile"
profile = "generic-gate-mqtt"
TOML
export ENGINE_CMD="sh -c 'rm -rf $work/store; RUST_LOG=warn exec $here/target/release/gatehouse run --config $work/gatehouse.toml --broker-port {port}'"
"$referee" "${1:-1000,5000}" "${2:-10}" "${3:-floor,node-red,engine}"
