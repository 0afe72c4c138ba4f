#!/usr/bin/env bash
# The company's pages under load (issue 30): a street of 50 communities with a day of 2,000,000
# passages in PostgreSQL (`bench-forms`' seed), 100 street officers each with a session of
# their own asking for the street's day page at once (wrk, 100 connections, each request with
# the next session's cookie), while the ingest takes a fleet's records at RATE/s into the same
# database. Then the same with the form cache off (every request builds the form), and the
# page weight of every page.
#   bench/web.sh [RATE] [SECONDS] [SESSIONS]          e.g. bench/web.sh 5000 30 100
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
rate=${1:-5000}
secs=${2:-30}
sessions=${3:-100}
command -v wrk >/dev/null || { echo "bench/web.sh needs wrk (apt-get install wrk)" >&2; exit 1; }
. "$here/bench/company-env.sh"

db="postgres://postgres@127.0.0.1:$pport/postgres"
day=2026-12-01
street=330106001
"$bin/gatehouse-demo" bench-forms --database "$db" --communities 50 --passages "${FORMS_PASSAGES:-2000000}" >"$work/seed.json"
echo "seeded: $(cat "$work/seed.json")"
for i in $(seq 1 "$sessions"); do
  echo "officer password $i" | "$bin/gatehouse-company" user add "officer$i" --role street \
    --scope "$street" --password-stdin --database "$db" >/dev/null
done
echo "worker password 1" | "$bin/gatehouse-company" user add worker --role community \
  --scope 330106001001 --password-stdin --database "$db" >/dev/null
echo "operator password 1" | "$bin/gatehouse-company" user add operator --role company \
  --password-stdin --database "$db" >/dev/null

serve() { # serve PORT CACHE_SECONDS
  "$bin/gatehouse-company" serve --database "$db" --listen "127.0.0.1:$1" --form-cache-s "$2" \
    >"$work/serve-$1.log" 2>&1 &
  pids="$pids $!"
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$1/login" >/dev/null && return; sleep 0.1; done
  echo "serve did not start" >&2; exit 1
}
login() { # login PORT NAME PASSWORD -> the session cookie
  local jar=$work/jar.$$ token
  token=$(curl -s -c "$jar" "http://127.0.0.1:$1/login" | grep -o 'name="csrf" value="[^"]*"' | sed 's/.*value="//;s/"$//')
  curl -s -b "$jar" -c "$jar" --data-urlencode "name=$2" --data-urlencode "password=$3" \
    --data-urlencode "csrf=$token" -o /dev/null "http://127.0.0.1:$1/login"
  awk '$6 == "gh_session" { print "gh_session=" $7 }' "$jar"
  rm -f "$jar"
}
run() { # run PORT LABEL
  local lua=$work/sessions-$1.lua
  { echo "cookies = {"
    for i in $(seq 1 "$sessions"); do echo "  \"$(login "$1" "officer$i" "officer password $i")\","; done
    echo "}"
    cat "$here/bench/web.lua"; } >"$lua"
  echo "$2:"
  wrk -t2 -c"$sessions" -d"${secs}s" --timeout 10s -s "$lua" "http://127.0.0.1:$1/s/$street?date=$day" | tail -n 2
}

cached=$(free_port); serve "$cached" 10
uncached=$(free_port); serve "$uncached" 0
# The ingest at RATE/s into the same PostgreSQL (a database of its own there, so its report
# counts only its records), for the whole of both runs.
as_pg "$pgbin/createdb" -h 127.0.0.1 -p "$pport" -U postgres ingest
"$bin/gatehouse-demo" bench-ingest --broker-port "$mport" \
  --database "postgres://postgres@127.0.0.1:$pport/ingest" --instances 1 \
  --rate "$rate" --seconds $((secs * 2 + 20)) >"$work/ingest.json" 2>&1 &
ingest=$!
pids="$pids $ingest"
sleep 5
run "$cached" "the street's day page, form cache 10 s (the default), $sessions sessions, ingest at $rate/s"
run "$uncached" "the same, form cache off (every request builds the street's form)"
wait "$ingest" || true
echo "ingest meanwhile: $(tail -n1 "$work/ingest.json")"

echo "page weights (bytes, as served):"
op=$(login "$cached" operator "operator password 1")
wk=$(login "$cached" worker "worker password 1")
of=$(login "$cached" officer1 "officer password 1")
weigh() { printf '  %-48s %s\n' "$2" "$(curl -s -b "$1" -o /dev/null -w '%{size_download}' "http://127.0.0.1:$cached$2")"; }
printf '  %-48s %s\n' /login "$(curl -s -o /dev/null -w '%{size_download}' "http://127.0.0.1:$cached/login")"
weigh "$wk" "/c/330106001001?date=$day"
for k in entry temperature visitor vehicle outings health; do weigh "$wk" "/c/330106001001/forms/$k?date=$day"; done
weigh "$wk" "/c/330106001001/forms/vehicle?date=$day&page=9999"
weigh "$of" "/s/$street?date=$day"
weigh "$op" "/d/330106?date=$day"
weigh "$op" /fleet
weigh "$op" /fleet/alarms
weigh "$op" /fleet/orders
