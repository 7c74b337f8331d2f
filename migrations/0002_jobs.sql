-- Jobs of the job service, and the outbox its relay publishes from.
--
-- The set of job types is owned by the code (common/job_types.py); the CHECK
-- guards the shape of a type name, so adding a type needs no migration.
-- owner_id has no foreign key to users: the job service trusts the signed
-- token's subject and the two services may keep their tables apart.
CREATE TABLE jobs (
    id          uuid        PRIMARY KEY,
    owner_id    uuid        NOT NULL,
    type        text        NOT NULL CHECK (type ~ '^[a-z][a-z0-9_]{0,62}$'),
    payload     jsonb       NOT NULL,
    status      text        NOT NULL DEFAULT 'QUEUED'
                            CHECK (status IN ('QUEUED', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED')),
    result      text        CHECK (result IS NULL OR status = 'COMPLETED'),
    error       text        CHECK (error IS NULL OR status IN ('FAILED', 'CANCELLED')),
    attempts    integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- The claim of the delivery that started the current attempt; see UpdateJob.
    claim_id    uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    finished_at timestamptz,
    CHECK ((finished_at IS NOT NULL) = (status IN ('COMPLETED', 'FAILED', 'CANCELLED')))
);

-- ListJobs: a user's jobs newest first, optionally of one status.
CREATE INDEX jobs_owner_newest ON jobs (owner_id, created_at DESC, id DESC);
CREATE INDEX jobs_owner_status_newest ON jobs (owner_id, status, created_at DESC, id DESC);

-- One row per message still to publish. CreateJob writes it in the same
-- transaction as the job; the relay deletes it only after the broker confirmed
-- the message, so a job is never stored without eventually being published.
CREATE TABLE job_outbox (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id     uuid        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    body       bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
