-- Live job streams (WatchJob, WatchJobs; issue 12): every committed change to
-- a job is announced on the channel `jobqueue_job_changes`, which each
-- job-service replica with watchers LISTENs to (job_svc/watch.py), so a change
-- made through one replica reaches watchers on every other.
--
-- Only for jobs someone watches. NOTIFY is not free: a transaction that
-- notified takes a database-wide lock while it commits, so committing writers
-- queue behind each other's WAL flush (measured: 2.5 times fewer single-row
-- updates a second). A replica keeps a row here for each user whose jobs it
-- has watchers for (and one with no owner for an operator watching everyone's),
-- with an expiry it renews. A change to a job nobody watches costs the trigger
-- one look at this tiny table and nothing else, so one user's open dashboard
-- does not slow anyone else's jobs. UNLOGGED: the replicas that need it
-- rebuild it within seconds, and a crash that empties it ends their watches
-- (they watch again).
CREATE UNLOGGED TABLE job_watch_interest (
    -- A replica's own id, chosen afresh each time it starts listening.
    replica     uuid        NOT NULL,
    -- Whose jobs it watches; NULL: every user's.
    owner_id    uuid,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX job_watch_interest_owner ON job_watch_interest (owner_id);

-- The payload is what a replica needs to decide, without reading the row,
-- which of its watchers care: the job, its owner, its type, and its status
-- before and after (so a watcher filtering on a status also hears of a job
-- leaving it). Well under NOTIFY's 8,000-byte limit: a type is at most 63
-- characters.
CREATE FUNCTION jobqueue_announce_job_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    -- clock_timestamp(), not now(): a long transaction must not see an expired
    -- interest as live. A volatile function's query takes a fresh snapshot, so
    -- an interest committed before this statement began is seen.
    IF EXISTS (
        SELECT 1 FROM job_watch_interest
        WHERE (owner_id = NEW.owner_id OR owner_id IS NULL) AND expires_at > clock_timestamp()
    ) THEN
        PERFORM pg_notify(
            'jobqueue_job_changes',
            concat_ws(' ', NEW.id, NEW.owner_id, NEW.type,
                      CASE WHEN TG_OP = 'UPDATE' THEN OLD.status ELSE '-' END, NEW.status)
        );
    END IF;
    RETURN NULL;
END
$$;

-- While no process has watchers, the trigger does not even run: its WHEN
-- clause takes a shared transaction-level advisory lock on the key below,
-- which succeeds unless some process with watchers holds (or waits for) it
-- exclusively (job_svc/watch_store.py, WATCH_LOCK_KEY). No table is read for
-- that, so a change no one watches costs a lock the transaction keeps until it
-- commits (the look at job_watch_interest it replaced cost 0.2 ms of
-- PostgreSQL CPU per job at 100 jobs/s in `make bench`). And it is what makes
-- watching safe to start: a process's exclusive request waits for every
-- transaction that took the shared lock, that is, every one that skipped
-- announcing, to commit; from the moment it is queued, no change skips.
CREATE TRIGGER jobs_announce_change
    AFTER INSERT OR UPDATE ON jobs
    FOR EACH ROW WHEN (NOT pg_try_advisory_xact_lock_shared(7306205391485411329))
    EXECUTE FUNCTION jobqueue_announce_job_change();

-- The job service registers and renews its interests, and removes them (and
-- those of replicas that died holding some) when their last watcher leaves.
GRANT SELECT, INSERT, UPDATE, DELETE ON job_watch_interest TO jobqueue_jobs;
