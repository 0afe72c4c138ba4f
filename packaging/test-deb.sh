#!/usr/bin/env bash
# Installs the package on this machine as an operator would, without systemd running (a CI
# container, an image build), and checks what it promises: the binary runs, the installed
# example config checks, the system user and the state directory exist, the unit verifies; an
# upgrade over an edited config keeps the edit; a purge leaves nothing behind. Root only.
#   packaging/test-deb.sh target/debian/gatehouse_*.deb
set -euo pipefail
deb=${1:?usage: $0 PACKAGE.deb}
[ "$(id -u)" = 0 ] || { echo "$0: run as root" >&2; exit 1; }
fail() { echo "test-deb: FAILED: $*" >&2; exit 1; }
step() { echo "test-deb: $*"; }

export DEBIAN_FRONTEND=noninteractive
dpkg --purge gatehouse >/dev/null 2>&1 || true

step "install $(basename "$deb")"
dpkg -i "$deb" >/dev/null
/usr/bin/gatehouse --version | grep -q '^gatehouse ' || fail "--version"
# The example is production: its uplink password file comes empty, and is refused so.
[ "$(stat -c '%U %a' /etc/gatehouse/uplink.pass)" = "gatehouse 600" ] || fail "uplink.pass: $(stat -c '%U %a' /etc/gatehouse/uplink.pass)"
if /usr/bin/gatehouse check-config /etc/gatehouse/gatehouse.toml >/dev/null 2>&1; then
  fail "check-config passed with no uplink password"
fi
echo "operator-set-uplink-password" > /etc/gatehouse/uplink.pass
/usr/bin/gatehouse check-config /etc/gatehouse/gatehouse.toml >/dev/null || fail "check-config on the installed example"
getent passwd gatehouse >/dev/null || fail "no gatehouse user"
# The console: a certificate made at install, its key for the daemon only; logins added by the
# command, readable by the daemon; the console on the LAN with TLS passes the check.
openssl x509 -in /etc/gatehouse/console.crt -noout -subject 2>/dev/null | grep -q "gatehouse console" \
  || grep -q "BEGIN CERTIFICATE" /etc/gatehouse/console.crt || fail "no console certificate"
[ "$(stat -c '%G %a' /etc/gatehouse/console.key)" = "gatehouse 640" ] || fail "console.key: $(stat -c '%G %a' /etc/gatehouse/console.key)"
echo 'guard password 1' | /usr/bin/gatehouse console-user add guard1 --role guard --password-stdin >/dev/null \
  || fail "console-user add"
[ "$(stat -c '%G %a' /etc/gatehouse/console-users)" = "gatehouse 640" ] || fail "console-users: $(stat -c '%G %a' /etc/gatehouse/console-users)"
/usr/bin/gatehouse console-user list | grep -q "^guard1	guard	enabled" || fail "console-user list"
sed 's|^# listen = "192.168.10.1:8443"|listen = "0.0.0.0:8443"|' /etc/gatehouse/gatehouse.toml > /tmp/console-check.toml
grep -q '^listen = "0.0.0.0:8443"' /tmp/console-check.toml || fail "the example's [console] listen line moved"
/usr/bin/gatehouse check-config /tmp/console-check.toml >/dev/null 2>&1 && fail "check-config passed a LAN console without TLS in production"
sed -i 's|^# tls_cert = "/etc/gatehouse/console.crt"|tls_cert = "/etc/gatehouse/console.crt"|; s|^# tls_key = "/etc/gatehouse/console.key"|tls_key = "/etc/gatehouse/console.key"|' /tmp/console-check.toml
/usr/bin/gatehouse check-config /tmp/console-check.toml >/dev/null || fail "check-config on a console with TLS"
rm -f /tmp/console-check.toml
[ "$(stat -c '%U %a' /var/lib/gatehouse)" = "gatehouse 700" ] || fail "state directory: $(stat -c '%U %a' /var/lib/gatehouse)"
[ "$(stat -c '%G %a' /etc/gatehouse/gatehouse.toml)" = "gatehouse 640" ] || fail "config permissions"
unit=$(dpkg -L gatehouse | grep 'systemd/system/gatehouse.service$') || fail "no unit installed"
grep -qx /etc/gatehouse/gatehouse.toml /var/lib/dpkg/info/gatehouse.conffiles || fail "config not a conffile"
if command -v systemd-analyze >/dev/null; then
  step "systemd-analyze verify $unit"
  # It needs no running systemd; the unit's own problems are the lines that name it.
  out=$(systemd-analyze verify "$unit" 2>&1 || true)
  if echo "$out" | grep -q "gatehouse.service"; then
    fail "unit does not verify: $out"
  fi
else
  step "systemd-analyze not here: unit not verified"
fi

step "upgrade over an edited config"
echo "# edited by the operator" >> /etc/gatehouse/gatehouse.toml
version=$(dpkg-deb -f "$deb" Version)
work=$(mktemp -d)
dpkg-deb -R "$deb" "$work/pkg"
sed -i "s/^Version: .*/Version: ${version}+upgrade/" "$work/pkg/DEBIAN/control"
dpkg-deb -b "$work/pkg" "$work/upgrade.deb" >/dev/null
dpkg -i --force-confold "$work/upgrade.deb" >/dev/null
[ "$(dpkg-query -W -f '${Version}' gatehouse)" = "${version}+upgrade" ] || fail "upgrade not installed"
tail -n1 /etc/gatehouse/gatehouse.toml | grep -q "edited by the operator" || fail "edited config not kept"
/usr/bin/gatehouse check-config /etc/gatehouse/gatehouse.toml >/dev/null || fail "check-config after the upgrade"
rm -rf "$work"

step "purge"
dpkg --purge gatehouse >/dev/null
[ ! -e /usr/bin/gatehouse ] || fail "binary left"
[ ! -e /etc/gatehouse ] || fail "/etc/gatehouse left"
[ ! -e /var/lib/gatehouse ] || fail "/var/lib/gatehouse left"
! getent passwd gatehouse >/dev/null || fail "user left"
! getent group gatehouse >/dev/null || fail "group left"
step "ok"
