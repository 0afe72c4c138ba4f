-- PostgreSQL. The records, keyed by the gateway's full path and its seq (and time: a record's time never
-- changes, and PostgreSQL's partitions need it in the key).
CREATE TABLE gateways (
    gw TEXT PRIMARY KEY, district TEXT NOT NULL, street TEXT NOT NULL, community TEXT NOT NULL
);
CREATE TABLE passages (
    gw TEXT NOT NULL, seq BIGINT NOT NULL, at_ms BIGINT NOT NULL, community TEXT NOT NULL,
    lane TEXT NOT NULL, device TEXT NOT NULL, vehicle BOOLEAN NOT NULL, who TEXT NOT NULL,
    subject_id TEXT NOT NULL, household TEXT NOT NULL, allowed BOOLEAN NOT NULL,
    reason TEXT NOT NULL, inbound BOOLEAN NOT NULL, mode TEXT NOT NULL,
    not_actuated BOOLEAN NOT NULL, received_ms BIGINT NOT NULL,
    PRIMARY KEY (gw, seq, at_ms)
) PARTITION BY RANGE (at_ms);
-- One partition per local day, made ahead and on demand (`passages_YYYYMMDD`); a record whose
-- time is far off (a gateway clock decades wrong) lands in the default one.
CREATE TABLE passages_default PARTITION OF passages DEFAULT;
CREATE INDEX passages_by_community ON passages (community, at_ms);
-- Health data: its own table, its own (shorter) retention, and `forget` deletes from it.
CREATE TABLE temperatures (
    gw TEXT NOT NULL, seq BIGINT NOT NULL, at_ms BIGINT NOT NULL, community TEXT NOT NULL,
    lane TEXT NOT NULL, device TEXT NOT NULL, subject_id TEXT NOT NULL, household TEXT NOT NULL,
    celsius DOUBLE PRECISION NOT NULL, threshold DOUBLE PRECISION, fever BOOLEAN NOT NULL,
    device_disagrees BOOLEAN NOT NULL, lone BOOLEAN NOT NULL,
    PRIMARY KEY (gw, seq, at_ms)
);
CREATE INDEX temperatures_by_community ON temperatures (community, at_ms);
CREATE TABLE alarms (
    gw TEXT NOT NULL, seq BIGINT NOT NULL, at_ms BIGINT NOT NULL, community TEXT NOT NULL,
    lane TEXT NOT NULL, device TEXT NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    PRIMARY KEY (gw, seq, at_ms)
);
CREATE INDEX alarms_by_community ON alarms (community, at_ms);
CREATE TABLE stats (
    gw TEXT NOT NULL, stats_seq BIGINT NOT NULL, lane TEXT NOT NULL,
    start_ms BIGINT NOT NULL, end_ms BIGINT NOT NULL, community TEXT NOT NULL,
    street TEXT NOT NULL, district TEXT NOT NULL,
    entries BIGINT NOT NULL, exits BIGINT NOT NULL, vehicles_in BIGINT NOT NULL,
    vehicles_out BIGINT NOT NULL, fevers BIGINT NOT NULL, inside BIGINT NOT NULL,
    denials TEXT NOT NULL,
    PRIMARY KEY (gw, stats_seq, lane, start_ms)
);
CREATE INDEX stats_by_community ON stats (community, start_ms);
-- Newest wins: by (boot, seq) for a status, by the gateway's time for a twin.
CREATE TABLE gateway_status (
    gw TEXT PRIMARY KEY, boot BIGINT NOT NULL, seq BIGINT NOT NULL, online BOOLEAN NOT NULL,
    mode TEXT NOT NULL, version TEXT NOT NULL, outbox_depth BIGINT NOT NULL,
    gateway_time_ms BIGINT NOT NULL, received_ms BIGINT NOT NULL
);
CREATE TABLE twins (
    gw TEXT NOT NULL, device TEXT NOT NULL, lane TEXT NOT NULL, online BOOLEAN NOT NULL,
    arm TEXT NOT NULL, fault_code BIGINT NOT NULL, last_seen_ms BIGINT NOT NULL,
    gateway_time_ms BIGINT NOT NULL,
    PRIMARY KEY (gw, device)
);
-- Hourly rollups per gateway and lane (the columns: company/src/ingest/rollup.rs, COLUMNS).
CREATE TABLE rollups (
    gw TEXT NOT NULL, lane TEXT NOT NULL, hour_ms BIGINT NOT NULL, community TEXT NOT NULL,
    street TEXT NOT NULL, district TEXT NOT NULL,
    residents_in BIGINT NOT NULL, residents_out BIGINT NOT NULL,
    visitors_in BIGINT NOT NULL, visitors_out BIGINT NOT NULL,
    others_in BIGINT NOT NULL, others_out BIGINT NOT NULL,
    vehicles_in BIGINT NOT NULL, vehicles_out BIGINT NOT NULL,
    visitor_vehicles_in BIGINT NOT NULL, visitor_vehicles_out BIGINT NOT NULL,
    denied BIGINT NOT NULL, not_actuated BIGINT NOT NULL, screened BIGINT NOT NULL,
    fevers BIGINT NOT NULL, counted_fevers BIGINT NOT NULL, amended BIGINT NOT NULL,
    PRIMARY KEY (gw, lane, hour_ms)
);
CREATE INDEX rollups_by_community ON rollups (community, hour_ms);
CREATE INDEX rollups_by_street ON rollups (street, hour_ms);
CREATE INDEX rollups_by_district ON rollups (district, hour_ms);
CREATE TABLE rollup_denials (
    gw TEXT NOT NULL, lane TEXT NOT NULL, hour_ms BIGINT NOT NULL, community TEXT NOT NULL,
    reason TEXT NOT NULL, n BIGINT NOT NULL,
    PRIMARY KEY (gw, lane, hour_ms, reason)
);
CREATE INDEX rollup_denials_by_community ON rollup_denials (community, hour_ms);
-- What could not be decoded, kept raw: acked, counted, never a reason to stop the stream; a
-- redelivered one (same topic, same bytes: `digest`, SHA-256) is kept once.
CREATE TABLE quarantine (
    id BIGSERIAL PRIMARY KEY, received_ms BIGINT NOT NULL, topic TEXT NOT NULL,
    error TEXT NOT NULL, digest TEXT NOT NULL, payload BYTEA NOT NULL
);
CREATE UNIQUE INDEX quarantine_once ON quarantine (topic, digest);
