"""The worker service: consumes the job queue, runs each job, reports every state change via UpdateJob."""
