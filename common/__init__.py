"""Plumbing every service shares: settings, logs, errors, the gRPC server, health, secrets."""
