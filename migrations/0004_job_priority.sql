-- Job priorities: 1 low, 2 normal, 3 high (the AMQP priority of the job's
-- message, within the queue's x-max-priority of 3). The outbox keeps the
-- priority so the relay can publish with it without reading the job.
ALTER TABLE jobs ADD COLUMN priority smallint NOT NULL DEFAULT 2 CHECK (priority BETWEEN 1 AND 3);
ALTER TABLE job_outbox ADD COLUMN priority smallint NOT NULL DEFAULT 2 CHECK (priority BETWEEN 1 AND 3);
