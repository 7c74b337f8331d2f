-- Accounts of the auth service. Emails are stored normalised (trimmed,
-- lower-cased) so the UNIQUE constraint is the case-insensitive uniqueness rule.
CREATE TABLE users (
    id            uuid        PRIMARY KEY,
    email         text        NOT NULL UNIQUE CHECK (email = lower(btrim(email)) AND length(email) BETWEEN 3 AND 254),
    name          text        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    password_hash bytea       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
