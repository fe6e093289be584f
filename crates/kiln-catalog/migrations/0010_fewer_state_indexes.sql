-- Indexes that no query needs any more, each rewritten at every state change of its row.
--
-- Jobs: `jobs_queue_by_org` (state, organization_id, run_after, created_at, id) serves every
-- lookup `jobs_claim` and `jobs_org_state` served, the claim's and the reaper's alike (each is
-- an equality on the state, or on the state and the organization, then a range).
--
-- Files: no query looks a file up by its store and status; a store's counts by status read
-- `files_store_figures` (store_id, deleted_at, status, file_size), and lookups by store alone
-- have it and `files_store_created`.
--
-- On SQLite each index a change touches adds a page or two to the log at every commit: a
-- job's transition wrote 7.8 pages with the two job indexes and 3.9 without, a file's status
-- change 4.8 with `files_store_status` and 2.9 without (1,000 rows of each, replayed).
DROP INDEX jobs_claim;
DROP INDEX jobs_org_state;
DROP INDEX files_store_status;
