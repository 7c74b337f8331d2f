"""``jobq``, the command line of the client library: log in, submit, look at and wait for jobs.

``jobq --help`` lists the commands and what its exit codes mean; gen/README.md ("Command line")
shows it in use. Each module holds one concept: ``parser`` the arguments, ``inputs`` what is read
before any call (prompts, the payload, a file of jobs), ``jobfile`` how a payload or a line of a
file becomes a job, ``commands`` what each command does with :mod:`jobqueue.client`, ``config``
where the token and the addresses come from, ``output`` tables and JSON lines, ``progress`` the
bar, ``exits`` the exit codes; ``__main__`` wires them together.
"""
