"""Job Queue Processor client library: generated messages and stubs, and ``jobqueue.client``."""
