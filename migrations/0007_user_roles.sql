-- Roles of the auth service's accounts. Every account is a 'user'; an operator
-- may also list and re-run other users' dead jobs in the job service. The role
-- is granted only out of band (python -m auth_svc.admin), never through the
-- API, and reaches the job service as the access token's "roles" claim.
ALTER TABLE users ADD COLUMN role text NOT NULL DEFAULT 'user'
    CONSTRAINT users_role_known CHECK (role IN ('user', 'operator'));
