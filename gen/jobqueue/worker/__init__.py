"""The worker runtime: consume the job queue, run each job, report every state change via UpdateJob."""
