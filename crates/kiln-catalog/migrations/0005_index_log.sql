-- The cluster's shared index (see `index_log.rs`): every chunk and vector, durable, and a log
-- of what changed in sequence order, which each API node's local index replays. The embedded
-- backend writes its local index directly and leaves these tables empty.
CREATE TABLE index_chunks (
    file_id TEXT NOT NULL,
    generation BIGINT NOT NULL,
    chunk_index BIGINT NOT NULL,
    store_id TEXT NOT NULL,
    page BIGINT,
    text TEXT NOT NULL,
    -- little-endian f32s
    vector BYTEA NOT NULL,
    PRIMARY KEY (file_id, generation, chunk_index)
);
CREATE INDEX index_chunks_store ON index_chunks (store_id);

-- One row per change; `seq` has no gaps and follows commit order (it is taken from
-- `index_head` under that row's lock, at the very end of the writing transaction).
CREATE TABLE index_log (
    seq BIGINT PRIMARY KEY,
    op TEXT NOT NULL,
    store_id TEXT NOT NULL,
    file_id TEXT,
    generation BIGINT,
    created_at BIGINT NOT NULL
);

-- The last `seq` given, and the epoch naming this log (a replica of another log rebuilds).
CREATE TABLE index_head (
    id BIGINT PRIMARY KEY,
    seq BIGINT NOT NULL,
    epoch TEXT NOT NULL
);
