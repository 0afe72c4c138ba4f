-- The records, keyed by the gateway's full path and its seq (and time: a record's time never
-- changes, and PostgreSQL's partitions need it in the key).
CREATE TABLE gateways (
    gw TEXT PRIMARY KEY, district TEXT NOT NULL, street TEXT NOT NULL, community TEXT NOT NULL
);
CREATE TABLE passages (
    gw TEXT NOT NULL, seq INTEGER NOT NULL, at_ms INTEGER NOT NULL, community TEXT NOT NULL,
    lane TEXT NOT NULL, device TEXT NOT NULL, vehicle INTEGER NOT NULL, who TEXT NOT NULL,
    subject_id TEXT NOT NULL, household TEXT NOT NULL, allowed INTEGER NOT NULL,
    reason TEXT NOT NULL, inbound INTEGER NOT NULL, mode TEXT NOT NULL,
    not_actuated INTEGER NOT NULL, received_ms INTEGER NOT NULL,
    PRIMARY KEY (gw, seq, at_ms)
);
CREATE INDEX passages_by_community ON passages (community, at_ms);
-- Health data: its own table, its own (shorter) retention, and `forget` deletes from it.
CREATE TABLE temperatures (
    gw TEXT NOT NULL, seq INTEGER NOT NULL, at_ms INTEGER NOT NULL, community TEXT NOT NULL,
    lane TEXT NOT NULL, device TEXT NOT NULL, subject_id TEXT NOT NULL, household TEXT NOT NULL,
    celsius REAL NOT NULL, threshold REAL, fever INTEGER NOT NULL,
    device_disagrees INTEGER NOT NULL, lone INTEGER NOT NULL,
    PRIMARY KEY (gw, seq, at_ms)
);
CREATE INDEX temperatures_by_community ON temperatures (community, at_ms);
CREATE TABLE alarms (
    gw TEXT NOT NULL, seq INTEGER NOT NULL, at_ms INTEGER NOT NULL, community TEXT NOT NULL,
    lane TEXT NOT NULL, device TEXT NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    PRIMARY KEY (gw, seq, at_ms)
);
CREATE INDEX alarms_by_community ON alarms (community, at_ms);
CREATE TABLE stats (
    gw TEXT NOT NULL, stats_seq INTEGER NOT NULL, lane TEXT NOT NULL,
    start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL, community TEXT NOT NULL,
    street TEXT NOT NULL, district TEXT NOT NULL,
    entries INTEGER NOT NULL, exits INTEGER NOT NULL, vehicles_in INTEGER NOT NULL,
    vehicles_out INTEGER NOT NULL, fevers INTEGER NOT NULL, inside INTEGER NOT NULL,
    denials TEXT NOT NULL,
    PRIMARY KEY (gw, stats_seq, lane, start_ms)
);
CREATE INDEX stats_by_community ON stats (community, start_ms);
-- Newest wins: by (boot, seq) for a status, by the gateway's time for a twin.
CREATE TABLE gateway_status (
    gw TEXT PRIMARY KEY, boot INTEGER NOT NULL, seq INTEGER NOT NULL, online INTEGER NOT NULL,
    mode TEXT NOT NULL, version TEXT NOT NULL, outbox_depth INTEGER NOT NULL,
    gateway_time_ms INTEGER NOT NULL, received_ms INTEGER NOT NULL
);
CREATE TABLE twins (
    gw TEXT NOT NULL, device TEXT NOT NULL, lane TEXT NOT NULL, online INTEGER NOT NULL,
    arm TEXT NOT NULL, fault_code INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL,
    gateway_time_ms INTEGER NOT NULL,
    PRIMARY KEY (gw, device)
);
-- Hourly rollups per gateway and lane (the columns: company/src/ingest/rollup.rs, COLUMNS).
CREATE TABLE rollups (
    gw TEXT NOT NULL, lane TEXT NOT NULL, hour_ms INTEGER NOT NULL, community TEXT NOT NULL,
    street TEXT NOT NULL, district TEXT NOT NULL,
    residents_in INTEGER NOT NULL, residents_out INTEGER NOT NULL,
    visitors_in INTEGER NOT NULL, visitors_out INTEGER NOT NULL,
    others_in INTEGER NOT NULL, others_out INTEGER NOT NULL,
    vehicles_in INTEGER NOT NULL, vehicles_out INTEGER NOT NULL,
    visitor_vehicles_in INTEGER NOT NULL, visitor_vehicles_out INTEGER NOT NULL,
    denied INTEGER NOT NULL, not_actuated INTEGER NOT NULL, screened INTEGER NOT NULL,
    fevers INTEGER NOT NULL, counted_fevers INTEGER NOT NULL, amended INTEGER NOT NULL,
    PRIMARY KEY (gw, lane, hour_ms)
);
CREATE INDEX rollups_by_community ON rollups (community, hour_ms);
CREATE INDEX rollups_by_street ON rollups (street, hour_ms);
CREATE INDEX rollups_by_district ON rollups (district, hour_ms);
CREATE TABLE rollup_denials (
    gw TEXT NOT NULL, lane TEXT NOT NULL, hour_ms INTEGER NOT NULL, community TEXT NOT NULL,
    reason TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (gw, lane, hour_ms, reason)
);
CREATE INDEX rollup_denials_by_community ON rollup_denials (community, hour_ms);
-- What could not be decoded, kept raw: acked, counted, never a reason to stop the stream; a
-- redelivered one (same topic, same bytes: `digest`, SHA-256) is kept once.
CREATE TABLE quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT, received_ms INTEGER NOT NULL, topic TEXT NOT NULL,
    error TEXT NOT NULL, digest TEXT NOT NULL, payload BLOB NOT NULL
);
CREATE UNIQUE INDEX quarantine_once ON quarantine (topic, digest);
