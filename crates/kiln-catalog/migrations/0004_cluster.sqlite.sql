-- The queue's claim looks for each organization's next due job (see `queue.rs`).
CREATE INDEX jobs_org_state ON jobs (organization_id, state, run_after, created_at, id);
