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
. "$here/bench/company-env.sh"

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
