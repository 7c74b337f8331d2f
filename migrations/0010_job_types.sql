-- The job types CreateJob accepts, as the workers that run them declare them
-- (DeclareJobTypes): each one's payload JSON Schema, version and defaults. The
-- job service checks payloads against these schemas and never imports a
-- worker's code. The three built-in types come with the database, declared by
-- no worker yet (declared_at NULL); common/job_types.py BUILTIN_TYPES holds the
-- same schemas (tests/unit/test_job_type_schemas.py compares them).
CREATE TABLE job_types (
    name                    text        PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    summary                 text        NOT NULL CHECK (char_length(summary) <= 500),
    payload_schema          jsonb       NOT NULL,
    version                 integer     NOT NULL CHECK (version >= 1),
    -- 0: the service's default (common/limits.py).
    default_max_attempts    integer     NOT NULL DEFAULT 0 CHECK (default_max_attempts BETWEEN 0 AND 10),
    default_timeout_seconds integer     NOT NULL DEFAULT 0 CHECK (default_timeout_seconds BETWEEN 0 AND 3600),
    -- When a worker last declared the type; NULL for one no worker has declared.
    declared_at             timestamptz,
    updated_at              timestamptz NOT NULL DEFAULT now()
);

INSERT INTO job_types (name, summary, payload_schema, version) VALUES
    ('reverse_string', 'a string; the result is the string reversed',
     '{"type": "string", "maxLength": 65536}', 1),
    ('uppercase_text', 'a string; the result is the string upper-cased',
     '{"type": "string", "maxLength": 65536}', 1),
    ('fibonacci_calc', 'a whole number 0..100000; the result is F(n)',
     '{"type": "integer", "minimum": 0, "maximum": 100000}', 1);

-- The job service reads the types and stores what workers declare; it never
-- deletes one (jobs may still name it). DeclareJobTypes locks the rows it
-- changes (SELECT ... FOR UPDATE), which needs UPDATE.
GRANT SELECT, INSERT, UPDATE ON job_types TO jobqueue_jobs;
