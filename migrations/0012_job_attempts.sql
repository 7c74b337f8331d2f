-- Attempt history and queue statistics (issue 12).
--
-- One row per start of a job by a worker: written by the same statement that
-- moves the job (a RUNNING report with a new claim inserts it; a COMPLETED or
-- FAILED report, the relay taking back an expired lease, or a cancel ends it),
-- so the history never disagrees with the job. The number is the job's
-- `attempts` after the start, which keeps counting across re-runs: (job_id,
-- number) is unique for ever. Jobs that ran before this migration have no rows
-- for those attempts.
CREATE TABLE job_attempts (
    job_id     uuid        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    number     integer     NOT NULL CHECK (number >= 1),
    -- As the worker named itself (UpdateJobRequest.worker_id); '' if it did not.
    worker_id  text        NOT NULL DEFAULT '' CHECK (char_length(worker_id) <= 200),
    claim_id   uuid        NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    ended_at   timestamptz,
    outcome    text        NOT NULL DEFAULT 'RUNNING'
                           CHECK (outcome IN ('RUNNING', 'COMPLETED', 'FAILED', 'LOST', 'CANCELLED')),
    error      text,
    PRIMARY KEY (job_id, number),
    CHECK ((ended_at IS NULL) = (outcome = 'RUNNING'))
);

-- The job service writes attempts and ends them; it never deletes one (the
-- CASCADE does, should a job ever be deleted by its owner's tooling).
GRANT SELECT, INSERT, UPDATE ON job_attempts TO jobqueue_jobs;

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
