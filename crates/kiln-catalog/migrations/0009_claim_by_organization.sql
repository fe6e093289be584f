-- A claim takes each organization's earliest due job and counts its running ones: both are
-- ranges of this index, so a claim no longer reads the whole queue.
CREATE INDEX jobs_org_queue ON jobs (organization_id, state, run_after, created_at, id);
