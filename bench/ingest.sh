#!/usr/bin/env bash
# The company ingest's benchmark (issue 29): a fleet of simulated gateways on a mosquitto of this
# script's own, two `gatehouse-company ingest` instances sharing the stream, into a PostgreSQL
# started here (initdb in a temporary directory, fsync on) — with one instance killed (-9) and
# restarted, and PostgreSQL restarted (-m immediate), mid-stream — then the same into SQLite (one
# instance: one writer). Prints one JSON line per run: published, stored, lost, duplicated
# (counted in the database), records/s.
#   bench/ingest.sh [PG_RATE] [SQLITE_RATE] [SECONDS]      e.g. bench/ingest.sh 20000 5000 30
#   ONLY=forms bench/ingest.sh                             the forms' bench alone
#   ONLY=ingest PG_INSTANCES=1 bench/ingest.sh 30000 8000 20   one instance's capacity (no forms)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
pg_rate=${1:-20000}
sqlite_rate=${2:-5000}
secs=${3:-30}
cargo build --release --quiet -p gatehouse-company -p gatehouse-demo --manifest-path "$here/Cargo.toml"
bin=$here/target/release
work=$(mktemp -d)
chmod 777 "$work"
mpid=
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  [ -n "$mpid" ] && kill "$mpid" 2>/dev/null
  as_pg "$pgbin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

mport=$(free_port)
# The ingest's broker sizing (README, "The company side"): a window of unacked messages per
# instance, and room to queue for a persistent session while an instance is away.
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 1000\nmax_queued_messages 2000000\npersistence false\n' "$mport" >"$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 & mpid=$!

pport=$(free_port)
as_pg "$pgbin/initdb" --auth=trust -U postgres -E UTF8 -D "$work/pg" >/dev/null
pg_ctl_start="$pgbin/pg_ctl -D $work/pg -o '-p $pport -k $work -c listen_addresses=127.0.0.1' -w -l $work/pg.log"
as_pg sh -c "$pg_ctl_start start" >/dev/null
sleep 1
restart="$( [ "$(id -u)" = 0 ] && echo 'runuser -u postgres -- ')sh -c \"$pg_ctl_start -m immediate restart\" >/dev/null"

if [ "${ONLY:-}" != forms ]; then
"$bin/gatehouse-demo" bench-ingest --broker-port "$mport" \
  --database "postgres://postgres@127.0.0.1:$pport/postgres" --instances "${PG_INSTANCES:-2}" \
  --rate "$pg_rate" --seconds "$secs" --kill-at-s $((secs / 3)) \
  --db-restart "$((secs * 2 / 3)):$restart"
"$bin/gatehouse-demo" bench-ingest --broker-port "$mport" \
  --database "sqlite:$work/records.db" --instances 1 --rate "$sqlite_rate" --seconds "$secs" \
  --kill-at-s $((secs / 2))
fi
[ "${ONLY:-}" = ingest ] && exit 0
# The forms on a street of 50 communities and FORMS_PASSAGES passages of one day (PostgreSQL; a
# fresh database, seeded through the ingest's own commit).
as_pg "$pgbin/createdb" -h 127.0.0.1 -p "$pport" -U postgres forms
"$bin/gatehouse-demo" bench-forms --database "postgres://postgres@127.0.0.1:$pport/forms" \
  --communities 50 --passages "${FORMS_PASSAGES:-2000000}"
