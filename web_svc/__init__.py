"""The web dashboard: a browser's view of the job queue, speaking to the services only through the client library."""
