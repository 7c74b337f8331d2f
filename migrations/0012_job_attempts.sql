-- Attempt history and queue statistics (issue 12).
--
-- One row per attempt that has ended, written by the same statement that ends
-- it: a COMPLETED or FAILED report, the job service taking back an expired
-- lease (LOST), a new claim taking the job over (LOST), or a cancel
-- (CANCELLED). So the history never disagrees with the job. The attempt that
-- runs now has no row: it is the job's own `attempts`, `started_at` and
-- `worker_id` (job_svc/store.py reads it from there), so an attempt costs the
-- job path one INSERT, not an INSERT at its start and an UPDATE at its end.
-- The number is the job's `attempts` when it ran, which keeps counting across
-- re-runs: (job_id, number) is unique for ever. Attempts that ended before
-- this migration have no rows.
ALTER TABLE jobs ADD COLUMN worker_id text CHECK (char_length(worker_id) <= 200);

CREATE TABLE job_attempts (
    job_id     uuid        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    number     integer     NOT NULL CHECK (number >= 1),
    -- As the worker named itself (UpdateJobRequest.worker_id); '' if it did not.
    worker_id  text        NOT NULL DEFAULT '' CHECK (char_length(worker_id) <= 200),
    started_at timestamptz NOT NULL,
    ended_at   timestamptz NOT NULL,
    outcome    text        NOT NULL CHECK (outcome IN ('COMPLETED', 'FAILED', 'LOST', 'CANCELLED')),
    error      text,
    PRIMARY KEY (job_id, number)
);

-- The job service records attempts; it never changes or deletes one (the
-- CASCADE does, should a job ever be deleted).
GRANT SELECT, INSERT ON job_attempts TO jobqueue_jobs;

-- GetQueueStats, operators only, reads three ranges and nothing else:
-- the jobs created, and those finished, within the last minutes (at most a
-- day), and the unfinished and dead jobs by type. Each index below covers its
-- query (an index-only scan), so the cost follows the jobs in the range, not
-- the table. The partial one holds only QUEUED, RUNNING and FAILED rows; every
-- change of status already rewrites the (owner_id, status, ...) index, so it
-- adds one more index entry per status change, not a lost HOT update.
CREATE INDEX jobs_created ON jobs (created_at);
CREATE INDEX jobs_finished ON jobs (finished_at, status) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_open_by_type ON jobs (type, status) WHERE status IN ('QUEUED', 'RUNNING', 'FAILED');
