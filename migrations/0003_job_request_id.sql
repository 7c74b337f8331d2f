-- Idempotent CreateJob (AIP-155): a user's request_id names at most one job.
-- The partial unique index is what makes concurrent repeats safe: the second
-- INSERT waits for the first and then does nothing.
ALTER TABLE jobs ADD COLUMN request_id uuid;
CREATE UNIQUE INDEX jobs_owner_request_id ON jobs (owner_id, request_id) WHERE request_id IS NOT NULL;
