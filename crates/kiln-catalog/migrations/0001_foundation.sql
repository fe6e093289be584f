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

CREATE TABLE files (
    id               TEXT PRIMARY KEY,
    organization_id  TEXT NOT NULL REFERENCES organizations(id),
    store_id         TEXT NOT NULL,
    file_name        TEXT NOT NULL,
    relative_path    TEXT,
    mime_type        TEXT NOT NULL,
    file_size        BIGINT NOT NULL,
    sha256           TEXT,
    status           TEXT NOT NULL,
    created_by       TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    deleted_at       BIGINT
);
CREATE INDEX files_store_status ON files (store_id, status);
