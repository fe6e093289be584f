-- File lifecycle events (the outbox): written in the transaction that changes a file, numbered
-- per organization. The counter row is taken last in each such transaction, so an
-- organization's events commit in sequence order (a reader tailing `seq` never skips one
-- committed late) and no lock cycle forms with the file and job rows taken before it.
CREATE TABLE event_counters (
    organization_id  TEXT PRIMARY KEY,
    last_seq         BIGINT NOT NULL,
    -- Events up to here were removed by retention; asking to resume before it means resync.
    purged_through   BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE events (
    organization_id  TEXT NOT NULL,
    seq              BIGINT NOT NULL,
    type             TEXT NOT NULL,
    store_id         TEXT,
    file_id          TEXT,
    data             TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    PRIMARY KEY (organization_id, seq)
);
CREATE INDEX events_created ON events (created_at);

-- Webhook endpoints: each follows its organization's events in order from `cursor_seq`,
-- delivered by whichever node holds its lease.
CREATE TABLE webhooks (
    id                TEXT PRIMARY KEY,
    organization_id   TEXT NOT NULL REFERENCES organizations(id),
    url               TEXT NOT NULL,
    event_types       TEXT NOT NULL,
    secret            TEXT NOT NULL,
    created_by        TEXT,
    created_at        BIGINT NOT NULL,
    deleted_at        BIGINT,
    cursor_seq        BIGINT NOT NULL,
    attempt           BIGINT NOT NULL DEFAULT 0,
    first_failed_at   BIGINT,
    next_attempt_at   BIGINT NOT NULL,
    lease_owner       TEXT,
    lease_expires_at  BIGINT
);
CREATE INDEX webhooks_org ON webhooks (organization_id, created_at);
-- One row per delivery attempt: the delivery log.
CREATE TABLE webhook_deliveries (
    id               TEXT PRIMARY KEY,
    webhook_id       TEXT NOT NULL,
    organization_id  TEXT NOT NULL,
    event_seq        BIGINT NOT NULL,
    event_type       TEXT NOT NULL,
    attempt          BIGINT NOT NULL,
    outcome          TEXT NOT NULL,
    status_code      BIGINT,
    error            TEXT,
    duration_ms      BIGINT NOT NULL,
    created_at       BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries (webhook_id, created_at);
