-- Signed-URL uploads (contract §5 upload-url / register) and server-wide secrets.
-- An upload's id becomes its file's id when it is registered. Its bytes arrive as parts
-- (one per accepted PUT), kept as blobs until registration assembles them.

CREATE TABLE uploads (
    id               TEXT PRIMARY KEY,
    organization_id  TEXT NOT NULL REFERENCES organizations(id),
    store_id         TEXT NOT NULL,
    file_name        TEXT NOT NULL,
    relative_path    TEXT,
    mime_type        TEXT NOT NULL,
    file_size        BIGINT NOT NULL,
    sha256           TEXT,
    received_bytes   BIGINT NOT NULL DEFAULT 0,
    created_by       TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL
);
CREATE INDEX uploads_store ON uploads (store_id);
CREATE INDEX uploads_expires ON uploads (expires_at);

CREATE TABLE upload_parts (
    upload_id     TEXT NOT NULL REFERENCES uploads(id) ON DELETE CASCADE,
    offset_bytes  BIGINT NOT NULL,
    length        BIGINT NOT NULL,
    blob_name     TEXT NOT NULL,
    PRIMARY KEY (upload_id, offset_bytes)
);

CREATE TABLE server_secrets (
    name        TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
