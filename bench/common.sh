# Sourced by compare.sh: the registry and the gateway they run gatehouse with.

# 100,000 residents (R000000… as the referee's load generator names them) and 20,000 plates, the
# registry issue 7 sizes the box for.
write_lists() { # dir
  {
    echo "person_id,household"
    for ((i = 0; i < 100000; i++)); do printf 'R%06d,H%05d\n' "$i" $((i / 3)); done
  } >"$1/residents.csv"
  {
    echo "plate,kind,household,valid_until,lockdown_allowed"
    for ((i = 0; i < 20000; i++)); do printf '粤B%05d,resident,H%05d,,\n' "$i" $((i % 33333)); done
  } >"$1/plates.csv"
}

# One lane as the referee expects it: thermal-1 (hikvision-acs-event) → gate-1
# (generic-gate-mqtt); the store and the lists in dir.
write_config() { # dir device-broker-table uplink-url [terminal-profile]
  cat >"$1/gatehouse.toml" <<TOML
[gateway]
id = "bench-gw"
city = "3301"
district = "330106"
street = "330106001"
community = "330106001001"

[device_broker]
$2

[uplink]
url = "$3"

[store]
dir = "store"

# The bench machine's clock is taken as right.
[clock]
trusted = true

# The referee's load generator stamps every event "2020-02-20T08:15:32+08:00": a clock frozen
# years back, and no heartbeat to learn it from. The age check is off (0) so that each event is
# decided as a live one; the device's own stored marker would still count.
[rules]
stale_event_s = 0

[registry]
import = "residents.csv"
plates = "plates.csv"

[[lanes]]
id = "bench-lane"

[[lanes.devices]]
id = "thermal-1"
role = "thermal"
profile = "${4:-hikvision-acs-event}"

[[lanes.devices]]
id = "gate-1"
role = "turnstile"
profile = "generic-gate-mqtt"
TOML
}
