-- What each service's database role may do (the roles are created by the
-- migration runner: see migrations/roles.py). Nothing is granted to PUBLIC.
-- A later migration that adds a table grants it here-and-now, in its own file.

-- The auth service: read accounts, add them, and change an account's role
-- (python -m auth_svc.admin). It cannot touch jobs.
GRANT SELECT, INSERT ON users TO jobqueue_auth;
GRANT UPDATE (role) ON users TO jobqueue_auth;

-- The job service: jobs and their outbox. It cannot read accounts (so no
-- password hash), and it deletes only outbox rows, once published. (The relay
-- locks the rows it publishes, SELECT ... FOR UPDATE, which needs UPDATE.)
GRANT SELECT, INSERT, UPDATE ON jobs TO jobqueue_jobs;
GRANT SELECT, INSERT, UPDATE, DELETE ON job_outbox TO jobqueue_jobs;
