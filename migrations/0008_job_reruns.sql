-- Re-running a FAILED job (RerunJob, RerunDeadJobs) grants it more attempts on
-- top of those it has used: attempts keeps counting, so every report stays
-- fenced by it, and max_attempts (the attempts allowed in total) grows past the
-- 10 a CreateJob may ask for.
ALTER TABLE jobs DROP CONSTRAINT jobs_max_attempts_check;
ALTER TABLE jobs ALTER COLUMN max_attempts TYPE integer;
ALTER TABLE jobs ADD CONSTRAINT jobs_max_attempts_positive CHECK (max_attempts >= 1);

-- Operators list dead jobs (FAILED, every owner) most recently failed first.
CREATE INDEX jobs_dead ON jobs (finished_at DESC, id DESC) WHERE status = 'FAILED';
