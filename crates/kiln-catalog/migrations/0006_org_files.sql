-- Organization files (the vector-stores family): a file can live in the organization without a
-- store, and be linked into several. `files` stays the per-store row that is processed (the
-- knowledge family's file, the vector-stores family's `vsf_` link); each row now names the
-- organization file it processes and where that file's original is. A knowledge-family upload
-- creates both at once with one ID (`origin = 'store'`: it goes when its last link goes); an
-- organization upload (`origin = 'org'`) stays until it is deleted itself.
CREATE TABLE org_files (
    id               TEXT PRIMARY KEY,
    organization_id  TEXT NOT NULL REFERENCES organizations(id),
    file_name        TEXT NOT NULL,
    relative_path    TEXT,
    mime_type        TEXT NOT NULL,
    file_size        BIGINT NOT NULL,
    sha256           TEXT,
    blob_path        TEXT NOT NULL,
    origin           TEXT NOT NULL,
    created_by       TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    deleted_at       BIGINT
);
CREATE INDEX org_files_org_created ON org_files (organization_id, created_at, id);

ALTER TABLE files ADD COLUMN org_file_id TEXT;
ALTER TABLE files ADD COLUMN original_blob TEXT;
UPDATE files SET org_file_id = id,
    original_blob = 'orgs/' || organization_id || '/stores/' || store_id || '/files/' || id || '/original';
INSERT INTO org_files (id, organization_id, file_name, relative_path, mime_type, file_size, sha256,
    blob_path, origin, created_by, created_at, updated_at, deleted_at)
    SELECT id, organization_id, file_name, relative_path, mime_type, file_size, sha256,
        original_blob, 'store', created_by, created_at, updated_at, deleted_at FROM files;
CREATE INDEX files_org_file ON files (org_file_id);
-- One live link per (store, organization file): concurrent adds of one file to one store
-- leave one row (and so one job).
CREATE UNIQUE INDEX files_one_link ON files (store_id, org_file_id) WHERE deleted_at IS NULL;

-- Requests sent with an `Idempotency-Key`: the first one's answer, replayed to any re-send
-- of the same key (per caller) for a day.
CREATE TABLE idempotency_keys (
    scope        TEXT NOT NULL,
    idem_key     TEXT NOT NULL,
    request      TEXT NOT NULL,
    state        TEXT NOT NULL,
    status_code  BIGINT,
    body         TEXT,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (scope, idem_key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
