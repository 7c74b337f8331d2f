"""Job Queue Processor client library.

- ``jobqueue.client``: the hand-written helper (connect, log in, submit, wait); its
  ``__all__`` is the public surface.
- ``jobqueue.auth.v1``, ``jobqueue.jobs.v1``: the generated messages and stubs, the full API.

This module imports nothing on purpose: it runs before every generated module is
imported, including in the services and the worker's handler processes, which need
the messages but not the helper's gRPC-status and asyncio machinery. Import the
helper from ``jobqueue.client``.
"""
