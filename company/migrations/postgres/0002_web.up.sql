-- The web pages: their users, sessions and audit; alarm acknowledgements (one record, whether
-- made here or at the gate); the orders and what became of them; the notifications sent.
-- Who may see a community: its gateways' street and district.
CREATE INDEX gateways_by_community ON gateways (community);
CREATE INDEX gateways_by_street ON gateways (street);
CREATE TABLE users (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, scope TEXT NOT NULL, hash TEXT NOT NULL,
    disabled BOOLEAN NOT NULL DEFAULT FALSE, created_ms BIGINT NOT NULL
);
-- A session is kept by its token's SHA-256, never the token.
CREATE TABLE web_sessions (
    token_hash TEXT PRIMARY KEY, user_name TEXT NOT NULL, csrf TEXT NOT NULL,
    created_ms BIGINT NOT NULL, expires_ms BIGINT NOT NULL
);
CREATE INDEX web_sessions_by_user ON web_sessions (user_name);
CREATE TABLE audit (
    at_ms BIGINT NOT NULL, user_name TEXT NOT NULL, address TEXT NOT NULL, action TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_by_time ON audit (at_ms);
CREATE TABLE alarm_acks (
    gw TEXT NOT NULL, seq BIGINT NOT NULL, at_ms BIGINT NOT NULL, by_user TEXT NOT NULL,
    acked_ms BIGINT NOT NULL, source TEXT NOT NULL,
    PRIMARY KEY (gw, seq, at_ms)
);
CREATE TABLE orders (
    gw TEXT NOT NULL, command_id TEXT NOT NULL, kind TEXT NOT NULL, issued_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL, applied BOOLEAN, refused TEXT NOT NULL, detail TEXT NOT NULL,
    result_ms BIGINT,
    PRIMARY KEY (gw, command_id)
);
CREATE INDEX orders_by_time ON orders (issued_ms);
-- One row per alarm and channel (`webhook:…`, `email:…`): sent once, retried with backoff
-- (`next_ms`, which also claims a row for one instance while it sends).
CREATE TABLE notifications (
    key TEXT PRIMARY KEY, kind TEXT NOT NULL, gw TEXT NOT NULL, detail TEXT NOT NULL,
    created_ms BIGINT NOT NULL, sent_ms BIGINT, attempts BIGINT NOT NULL, next_ms BIGINT NOT NULL,
    last_error TEXT NOT NULL
);
-- When the company received an alarm (the gateway's own time may be wrong): what the
-- notifications look back over.
ALTER TABLE alarms ADD COLUMN received_ms BIGINT NOT NULL DEFAULT 0;
-- Alarms from before: received when they were raised, as near as is known.
UPDATE alarms SET received_ms = at_ms;
CREATE INDEX alarms_by_received ON alarms (received_ms);
ALTER TABLE gateway_status ADD COLUMN registry_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE gateway_status ADD COLUMN clock_unsynced BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE gateway_status ADD COLUMN store_degraded BOOLEAN NOT NULL DEFAULT FALSE;
-- How often the gateway sends its status (0: a gateway before the field; 60 s assumed).
ALTER TABLE gateway_status ADD COLUMN period_ms BIGINT NOT NULL DEFAULT 0;
