# What bench/ingest.sh and bench/web.sh share: the release binaries, a mosquitto of their own
# (sized as the README's "The company side" says), and a PostgreSQL started in a temporary
# directory (initdb, fsync on), stopped and removed at exit. Sourced, with `here` set; leaves
# `bin`, `work`, `mport`, `pport`, `pgbin`, `as_pg`, `restart` (a PostgreSQL crash-restart);
# processes added to `pids` are stopped at exit too.
cargo build --release --quiet -p gatehouse-company -p gatehouse-demo --manifest-path "$here/Cargo.toml"
bin=$here/target/release
work=$(mktemp -d)
chmod 777 "$work"
mpid=
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pids=
cleanup() {
  for p in $pids; do kill "$p" 2>/dev/null; done
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

