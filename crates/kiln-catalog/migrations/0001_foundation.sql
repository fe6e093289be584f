-- Organizations, API keys, knowledge slices, stores, and the files table that store figures
-- are computed from. Timestamps are Unix milliseconds. Portable SQL (SQLite and PostgreSQL).

CREATE TABLE organizations (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id               TEXT PRIMARY KEY,
    organization_id  TEXT NOT NULL REFERENCES organizations(id),
    key_hash         TEXT NOT NULL UNIQUE,
    key_prefix       TEXT NOT NULL,
    role             TEXT NOT NULL,
    name             TEXT,
    created_at       BIGINT NOT NULL,
    revoked_at       BIGINT
);
CREATE INDEX api_keys_org ON api_keys (organization_id);

CREATE TABLE slices (
    id               TEXT PRIMARY KEY,
    organization_id  TEXT NOT NULL REFERENCES organizations(id),
    name             TEXT NOT NULL,
    description      TEXT,
    slice_type       TEXT NOT NULL,
    owner_type       TEXT NOT NULL,
    owner_id         TEXT,
    status           TEXT NOT NULL,
    created_by       TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    archived_at      BIGINT,
    archived_by      TEXT
);
CREATE INDEX slices_org_created ON slices (organization_id, created_at, id);

CREATE TABLE stores (
    id                    TEXT PRIMARY KEY,
    organization_id       TEXT NOT NULL REFERENCES organizations(id),
    slice_id              TEXT NOT NULL REFERENCES slices(id),
    name                  TEXT NOT NULL,
    description           TEXT,
    access_mode           TEXT NOT NULL,
    max_chunk_tokens      BIGINT NOT NULL,
    chunk_overlap_tokens  BIGINT NOT NULL,
    created_by            TEXT,
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL
);
CREATE INDEX stores_org_created ON stores (organization_id, created_at, id);
CREATE INDEX stores_slice ON stores (slice_id);

-- A file in a store. `active_generation` is the generation of chunks search may see (0: none
-- yet); `generation` is the last one handed to a worker. Figures are exact bytes and counts
-- of the active generation. `deleted_at` hides a file at once; a purge job removes the rest.
CREATE TABLE files (
    id                    TEXT PRIMARY KEY,
    organization_id       TEXT NOT NULL REFERENCES organizations(id),
    store_id              TEXT NOT NULL,
    file_name             TEXT NOT NULL,
    relative_path         TEXT,
    mime_type             TEXT NOT NULL,
    file_size             BIGINT NOT NULL,
    sha256                TEXT,
    status                TEXT NOT NULL,
    current_step          TEXT NOT NULL DEFAULT 'queued',
    progress_percent      BIGINT NOT NULL DEFAULT 0,
    error_code            TEXT,
    error_message         TEXT,
    retryable             BIGINT,
    attempts              BIGINT NOT NULL DEFAULT 0,
    generation            BIGINT NOT NULL DEFAULT 0,
    active_generation     BIGINT NOT NULL DEFAULT 0,
    chunk_count           BIGINT NOT NULL DEFAULT 0,
    extracted_text_bytes  BIGINT NOT NULL DEFAULT 0,
    vector_bytes          BIGINT NOT NULL DEFAULT 0,
    index_bytes           BIGINT NOT NULL DEFAULT 0,
    embedding_model       TEXT,
    created_by            TEXT,
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL,
    queued_at             BIGINT,
    started_at            BIGINT,
    completed_at          BIGINT,
    deleted_at            BIGINT
);
CREATE INDEX files_store_status ON files (store_id, status);
CREATE INDEX files_store_created ON files (store_id, created_at, id);

-- The durable queue. A job is claimed with a lease that a heartbeat extends; a reaper
-- re-queues jobs whose lease expired. `attempt` counts automatic tries of this job.
CREATE TABLE jobs (
    id                TEXT PRIMARY KEY,
    kind              TEXT NOT NULL,
    organization_id   TEXT NOT NULL,
    store_id          TEXT NOT NULL,
    file_id           TEXT NOT NULL,
    state             TEXT NOT NULL,
    attempt           BIGINT NOT NULL DEFAULT 0,
    lease_losses      BIGINT NOT NULL DEFAULT 0,
    run_after         BIGINT NOT NULL,
    lease_owner       TEXT,
    lease_expires_at  BIGINT,
    last_error        TEXT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);
CREATE INDEX jobs_claim ON jobs (state, run_after);
CREATE INDEX jobs_file ON jobs (file_id);
-- At most one live processing job per file: concurrent retries cannot enqueue two.
CREATE UNIQUE INDEX jobs_one_live_process ON jobs (file_id)
    WHERE kind = 'process' AND state IN ('queued', 'running');

CREATE TABLE file_logs (
    file_id          TEXT NOT NULL,
    seq              BIGINT NOT NULL,
    organization_id  TEXT NOT NULL,
    ts               BIGINT NOT NULL,
    level            TEXT NOT NULL,
    attempt          BIGINT NOT NULL,
    step             TEXT,
    event            TEXT NOT NULL,
    message          TEXT NOT NULL,
    data             TEXT NOT NULL,
    PRIMARY KEY (file_id, seq)
);
