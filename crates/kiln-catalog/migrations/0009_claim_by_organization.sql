-- A claim skips from one organization with queued jobs to the next, and takes each one's
-- earliest due job and counts its running ones: all are ranges of this index, so a claim no
-- longer reads the whole queue.
CREATE INDEX jobs_queue_by_org ON jobs (state, organization_id, run_after, created_at, id);
