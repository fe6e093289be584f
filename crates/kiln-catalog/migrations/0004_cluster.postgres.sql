-- The queue's claim looks for each organization's next due job (see `queue.rs`).
CREATE INDEX jobs_org_state ON jobs (organization_id, state, run_after, created_at, id);
-- PostgreSQL only: log entries of one file may be written by several processes at once (an
-- API node's retry, a worker's progress, any node's reaper), so their order comes from a
-- sequence rather than each process's clock. It starts at the current time in microseconds,
-- above the time-based numbers SQLite gives (a catalog moved from SQLite keeps its order).
CREATE SEQUENCE file_log_seq;
SELECT setval('file_log_seq', CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT));
