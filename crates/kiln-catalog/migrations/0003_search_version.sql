-- A counter per store, raised in the same transaction as any change to which of its files
-- search may see (a completion flipping `active_generation`, a delete), so a search can
-- reuse its copy of the store's searchable files until the counter moves.
ALTER TABLE stores ADD COLUMN search_version BIGINT NOT NULL DEFAULT 0;
