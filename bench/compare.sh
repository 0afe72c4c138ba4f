#!/usr/bin/env bash
# Runs ../shared/bench/compare.sh (floor relay, Node-RED, gatehouse on one mosquitto, same load)
# with gatehouse configured as that referee expects, in two rows:
#   engine  device side and uplink on the referee's broker (`--broker-port`);
#   direct  devices on gatehouse's own endpoint (`--endpoint-port`): the load generator logs in
#           as thermal-1 and gate-1 with their passwords; the uplink goes to a mosquitto of this
#           script's own, so decisions are recorded and sent upstream as in the other rows.
#           DIRECT=minimal puts examples/minimal_endpoint.rs in that row instead: parse, check,
#           answer inline on one thread, nothing durable — near the least any engine there can
#           do, so the row's floor on this machine. DIRECT=minimal-durable adds the durable work
#           gatehouse guarantees (record and dedupe key group-committed with an fsync, PUBACK
#           after the commit, gate command first): the least engine doing the same durable work.
#           DIRECT=minimal-uplink adds the rest of gatehouse's record: the dedupe window's oldest
#           key removed per event, each commit's records read back, sent as one QoS 1 batch to
#           the uplink's mosquitto and deleted after its PUBACK.
#           ENGINE=minimal-durable and ENGINE=minimal-uplink put examples/minimal_client.rs in the
#           engine row: the floor relay plus the same durable work (and uplink, to the referee's
#           broker as gatehouse's goes there): the least engine doing it via mosquitto.
# One lane (thermal-1 hikvision-acs-event → gate-1 generic-gate-mqtt), 100,000 residents and
# 20,000 plates (the registry issue 7 sizes the box for), a fresh store for every run.
#
# HTTP=1: the referee's HTTP mode — the terminal POSTs Hikvision listening-mode multipart bodies to
# gatehouse's HTTP device listener (`--http-port`) at /push/thermal-1/<its password>; thermal-1 is
# `hikvision-isapi`, gate-1 stays on the referee's broker. Rows: floor (floor-http), node-red,
# engine; pass HTTP_LOADGEN_ARGS (e.g. '--http-conns 32 --picture-bytes 100000') through.
#
# CONSOLE=20: the direct row with the guard's console on and 20 live streams held open on it
# (bench/console_streams.py), to set against the row without (issue 31: the console must not move
# the gate).
#
# usage: bench/compare.sh [RATES] [SECONDS] [ENGINES]     e.g. bench/compare.sh 5000 10 floor,direct
#        HTTP=1 bench/compare.sh 200,1000 10 floor,engine
#        DIRECT=minimal bench/compare.sh 5000 10 floor,direct
#        DIRECT=minimal-durable bench/compare.sh 5000 20 direct
#        DIRECT=minimal-uplink bench/compare.sh 5000 20 direct
#        ENGINE=minimal-uplink bench/compare.sh 5000 20 engine
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
referee=${REFEREE:-$here/../shared/bench/compare.sh}
# The box alone (-p): the company's crates never change the features it is built with.
cargo build --release --quiet -p gatehouse --manifest-path "$here/Cargo.toml"
work=$(mktemp -d)
mkdir "$work/direct"
upid=
trap '[ -n "$upid" ] && kill "$upid" 2>/dev/null; rm -rf "$work"' EXIT
# shellcheck source=bench/common.sh
. "$here/bench/common.sh"
write_lists "$work"
cp "$work"/*.csv "$work/direct/"
# Both on the referee's broker: `--broker-port` replaces the port.
write_config "$work" $'mode = "external"\nurl = "mqtt://127.0.0.1:1883"' "mqtt://127.0.0.1:1883"
export ENGINE_CMD="sh -c 'rm -rf $work/store; RUST_LOG=warn exec $here/target/release/gatehouse run --config $work/gatehouse.toml --broker-port {port}'"

# HTTP: the terminal pushes to the listener with its password in the path.
mkdir "$work/http"
cp "$work"/*.csv "$work/http/"
printf 'thermal-1 bench-terminal-pw\n' >"$work/http/devices.secrets"
chmod 600 "$work/http/devices.secrets"
write_config "$work/http" $'mode = "external"\nurl = "mqtt://127.0.0.1:1883"\nsecrets_file = "devices.secrets"' "mqtt://127.0.0.1:1883" hikvision-isapi
# The load generator's connections (HTTP_LOADGEN_ARGS --http-conns, up to 64) stand in for as many
# terminals, all from 127.0.0.1: past the per-address slots a box gives one host (8) the rest
# would be refused, as a LAN host opening that many would be.
printf '\n[device_http]\nmax_per_address = 64\n' >>"$work/http/gatehouse.toml"
export HTTP_ENGINE_CMD="sh -c 'rm -rf $work/http/store; RUST_LOG=warn exec $here/target/release/gatehouse run --config $work/http/gatehouse.toml --broker-port {port} --http-port {http_port}'"
export HTTP_PATH=/push/thermal-1/bench-terminal-pw

# direct: the endpoint (its port from `--endpoint-port`), device passwords in a 0600 file.
uport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\nmax_queued_messages 1000000\n' "$uport" >"$work/uplink-mosquitto.conf"
mosquitto -c "$work/uplink-mosquitto.conf" >"$work/uplink-mosquitto.log" 2>&1 & upid=$!
printf 'thermal-1 bench-terminal-pw\ngate-1 bench-gate-pw\n' >"$work/direct/devices.secrets"
chmod 600 "$work/direct/devices.secrets"
write_config "$work/direct" $'secrets_file = "devices.secrets"' "mqtt://127.0.0.1:$uport"
export DIRECT_CMD="sh -c 'rm -rf $work/direct/store; RUST_LOG=warn exec $here/target/release/gatehouse run --config $work/direct/gatehouse.toml --endpoint-port {port}'"
if [[ ${CONSOLE:-0} != 0 ]]; then
  # The guard's console on the direct row, with CONSOLE browsers' worth of live streams held
  # open on it the whole time (bench/console_streams.py logs in again after each restart).
  cport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  printf '\n[console]\nlisten = "127.0.0.1:%s"\nusers = "console-users"\n' "$cport" >>"$work/direct/gatehouse.toml"
  echo 'bench-guard-password' | "$here/target/release/gatehouse" console-user --file "$work/direct/console-users" \
    add bench --role guard --password-stdin >/dev/null
  python3 "$here/bench/console_streams.py" "127.0.0.1:$cport" bench bench-guard-password "$CONSOLE" & spid=$!
  trap '[ -n "$upid" ] && kill "$upid" 2>/dev/null; kill "$spid" 2>/dev/null; rm -rf "$work"' EXIT
  echo "CONSOLE=$CONSOLE: $CONSOLE live streams held on the direct row's console (127.0.0.1:$cport)" >&2
fi
if [[ ${DIRECT:-} == minimal || ${DIRECT:-} == minimal-durable || ${DIRECT:-} == minimal-uplink ]]; then
  # The calibration: a minimal engine on its own endpoint (examples/minimal_endpoint.rs).
  cargo build --release --quiet -p gatehouse --example minimal_endpoint --manifest-path "$here/Cargo.toml"
  export DIRECT_CMD="$here/target/release/examples/minimal_endpoint {port}"
  if [[ $DIRECT == minimal-durable ]]; then
    export DIRECT_CMD="sh -c 'rm -rf $work/minimal; exec $here/target/release/examples/minimal_endpoint {port} --durable $work/minimal'"
  elif [[ $DIRECT == minimal-uplink ]]; then
    export DIRECT_CMD="sh -c 'rm -rf $work/minimal; exec $here/target/release/examples/minimal_endpoint {port} --durable $work/minimal --uplink $uport'"
  fi
  echo "DIRECT=$DIRECT: the direct row is examples/minimal_endpoint.rs, not gatehouse" >&2
elif [[ -n ${DIRECT:-} ]]; then
  echo "DIRECT=$DIRECT: unknown (minimal, minimal-durable or minimal-uplink)" >&2
  exit 2
fi
if [[ ${ENGINE:-} == minimal-durable || ${ENGINE:-} == minimal-uplink ]]; then
  # The calibration for the engine row: the floor relay plus gatehouse's durable work
  # (examples/minimal_client.rs), its uplink on the referee's broker as gatehouse's is.
  cargo build --release --quiet -p gatehouse --example minimal_client --manifest-path "$here/Cargo.toml"
  flag=
  [[ $ENGINE == minimal-uplink ]] && flag=--uplink
  export ENGINE_CMD="sh -c 'rm -rf $work/minimal-client; exec $here/target/release/examples/minimal_client {port} --durable $work/minimal-client $flag'"
  echo "ENGINE=$ENGINE: the engine row is examples/minimal_client.rs, not gatehouse" >&2
elif [[ -n ${ENGINE:-} ]]; then
  echo "ENGINE=$ENGINE: unknown (minimal-durable or minimal-uplink)" >&2
  exit 2
fi
export DIRECT_LOADGEN_ARGS="--pub-client-id hik-terminal --pub-user thermal-1 --pub-pass bench-terminal-pw --sub-client-id gate-controller --sub-user gate-1 --sub-pass bench-gate-pw --cmd-filter devices/gate-1/cmd"
if [[ ${HTTP:-0} != 0 ]]; then
  "$referee" "${1:-200,1000}" "${2:-10}" "${3:-floor,node-red,engine}"
else
  "$referee" "${1:-1000,5000}" "${2:-10}" "${3:-floor,node-red,engine,direct}"
fi
