-- Traces across the outbox (docs/operations.md#tracing).
--
-- CreateJob's trace would end at the commit: the relay publishes the row later,
-- in another task, maybe in another replica. So the row keeps the trace context
-- of the call that stored it, the W3C traceparent (and tracestate) as JSON,
-- {"traceparent": "00-..."}, and the relay's publish span continues that trace.
-- NULL when tracing is off, and for the messages of retries and re-runs, which
-- start traces of their own. Nullable with no default: adding it rewrites nothing,
-- and the job service's grant on the table (0009_service_roles.sql) covers it.
ALTER TABLE job_outbox ADD COLUMN trace_context text;
