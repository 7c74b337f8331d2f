-- Per-job timeouts. A claim (RUNNING) holds the job until lease_until: the
-- timeout plus a grace for the worker's report. A job whose lease runs out (its
-- worker hung or vanished) is taken back by the job service's relay and
-- counts as a failed, retryable attempt.
ALTER TABLE jobs ADD COLUMN timeout_seconds integer NOT NULL DEFAULT 60 CHECK (timeout_seconds BETWEEN 1 AND 3600);
ALTER TABLE jobs ADD COLUMN lease_until timestamptz CHECK (lease_until IS NULL OR status = 'RUNNING');
CREATE INDEX jobs_leases ON jobs (lease_until) WHERE lease_until IS NOT NULL;
