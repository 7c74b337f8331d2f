"""The auth service (``jobqueue.auth.v1.AuthService``): accounts, bcrypt passwords and EdDSA access tokens."""
