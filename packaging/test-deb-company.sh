#!/usr/bin/env bash
# The company side's package, installed as an operator would without systemd running: the
# binary runs, the installed example checks, the user and state directory exist, the unit
# verifies, the example's embedded database opens (migrations applied) and a form prints from
# it; a purge leaves nothing behind. Root only.
#   packaging/test-deb-company.sh target/debian/gatehouse-company_*.deb
set -euo pipefail
deb=${1:?usage: $0 PACKAGE.deb}
[ "$(id -u)" = 0 ] || { echo "$0: run as root" >&2; exit 1; }
fail() { echo "test-deb-company: FAILED: $*" >&2; exit 1; }
step() { echo "test-deb-company: $*"; }

export DEBIAN_FRONTEND=noninteractive
dpkg --purge gatehouse-company >/dev/null 2>&1 || true

step "install $(basename "$deb")"
dpkg -i "$deb" >/dev/null
/usr/bin/gatehouse-company --version | grep -q '^gatehouse-company ' || fail "--version"
/usr/bin/gatehouse-company check-config /etc/gatehouse-company/company.toml >/dev/null 2>&1 \
  || fail "check-config on the installed example"
getent passwd gatehouse-company >/dev/null || fail "no gatehouse-company user"
[ "$(stat -c '%U %a' /var/lib/gatehouse-company)" = "gatehouse-company 700" ] || fail "state directory"
[ "$(stat -c '%G %a' /etc/gatehouse-company/company.toml)" = "gatehouse-company 640" ] || fail "config permissions"
grep -qx /etc/gatehouse-company/company.toml /var/lib/dpkg/info/gatehouse-company.conffiles || fail "config not a conffile"
for name in gatehouse-company gatehouse-company-web; do
  unit=$(dpkg -L gatehouse-company | grep "systemd/system/$name.service$") || fail "no $name unit installed"
  if command -v systemd-analyze >/dev/null; then
    out=$(systemd-analyze verify "$unit" 2>&1 || true)
    if echo "$out" | grep -q "$name.service"; then
      fail "$name unit does not verify: $out"
    fi
  fi
done
step "the example's database, as the service's user"
runuser -u gatehouse-company -- /usr/bin/gatehouse-company form --form entry --community 330106001001 \
  --database sqlite:/var/lib/gatehouse-company/records.db | grep -q '出入登记' || fail "form from the embedded database"
step "the pages, as the web service starts them, with a user added by the command"
echo "an operator's password" | runuser -u gatehouse-company -- /usr/bin/gatehouse-company user add \
  operator --role company --password-stdin --database sqlite:/var/lib/gatehouse-company/records.db \
  | grep -q 'user operator added' || fail "user add"
runuser -u gatehouse-company -- /usr/bin/gatehouse-company serve --config /etc/gatehouse-company/company.toml \
  >/tmp/gatehouse-company-web.log 2>&1 &
web=$!
ok=
for _ in $(seq 100); do
  if curl -sf http://127.0.0.1:8080/login | grep -q 'name="csrf"'; then ok=1; break; fi
  sleep 0.1
done
kill "$web"; wait "$web" 2>/dev/null || true
[ -n "$ok" ] || fail "serve --config: no login page ($(cat /tmp/gatehouse-company-web.log))"
runuser -u gatehouse-company -- /usr/bin/gatehouse-company migrate --down \
  --database sqlite:/var/lib/gatehouse-company/records.db | grep -q 'rolled back migration 2' || fail "migrate --down"

step "purge"
dpkg --purge gatehouse-company >/dev/null
[ ! -e /usr/bin/gatehouse-company ] || fail "binary left"
[ ! -e /etc/gatehouse-company ] || fail "/etc/gatehouse-company left"
[ ! -e /var/lib/gatehouse-company ] || fail "/var/lib/gatehouse-company left"
! getent passwd gatehouse-company >/dev/null || fail "user left"
step "ok"
