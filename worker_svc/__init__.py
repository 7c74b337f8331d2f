"""The worker service: the worker SDK (jobqueue.worker) running the built-in job types, and the demo ones on request."""
