"""The job service: the jobqueue.jobs.v1.JobService API over PostgreSQL, with an outbox relay to RabbitMQ."""
