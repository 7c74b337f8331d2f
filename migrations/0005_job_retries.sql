-- Retries with backoff. A failed attempt that may be retried sends the job
-- back to QUEUED with run_after set; the job service's relay moves due jobs
-- into the outbox. The timers live here, not in the broker, so they survive
-- any restart and need no RabbitMQ plugin.
ALTER TABLE jobs ADD COLUMN max_attempts smallint NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 10);
ALTER TABLE jobs ADD COLUMN run_after timestamptz CHECK (run_after IS NULL OR status = 'QUEUED');
CREATE INDEX jobs_due_retries ON jobs (run_after) WHERE run_after IS NOT NULL;

-- A job waiting for its retry keeps the error of the attempt that failed.
-- (jobs_check1 is the name PostgreSQL gave the error CHECK of 0002_jobs.sql.)
ALTER TABLE jobs DROP CONSTRAINT jobs_check1;
ALTER TABLE jobs ADD CONSTRAINT jobs_error_not_with_result CHECK (error IS NULL OR status <> 'COMPLETED');
