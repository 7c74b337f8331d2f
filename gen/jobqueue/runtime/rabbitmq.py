"""The RabbitMQ topology the job service publishes to and the workers consume from.

Both sides declare it identically (declaring is idempotent, and RabbitMQ refuses
a redeclare with different arguments, so the arguments live only here):

- ``<queue>.type.<name>``: one durable classic queue per job type, of the
  JobDelivery messages of that type's jobs (their bodies:
  gen/jobqueue/runtime/messages.py). The name is a pure function of the type's,
  so the job service routes with no configuration, and a worker consumes just
  the queues of the types it runs: a slow type's backlog never waits in front of
  another type's jobs. Its arguments are fixed at creation, so the ones later
  features rely on are set from the start: ``x-max-priority`` (priorities, within
  the type's queue) and a dead-letter route to ``<queue>.dead``.
- ``<queue>``: the one queue of every type before routing; the job service moves
  what an older version left there into the types' queues (job_svc/publisher.py).
- ``<queue>.dead``: durable queue where rejected messages (undecodable ones, or
  jobs that exhausted their attempts) wait for an operator.
- ``<queue>.control``: fanout exchange of notices to every worker (a RUNNING
  job was cancelled); each worker binds a private, auto-deleted queue to it.

Connections are plain (not aio-pika's "robust" ones): the Reconnector below
keeps one open, so its owner knows when it is disconnected and can say so in
health. They ask for a HEARTBEAT_SECONDS heartbeat unless the URL names one
(``?heartbeat=30``): the broker takes back the messages of a worker that hung
without closing its connection after that long, not after RabbitMQ's 60 s.

TLS: an ``amqps://`` URL connects over TLS and verifies the broker's certificate
and host name, against the system's CAs or the one its ``cafile=`` names
(aiormq reads ``cafile``, ``capath``, ``cadata``, ``certfile``, ``keyfile`` and
``no_verify_ssl`` from the query; see ``check_url``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractQueue
from yarl import URL

from jobqueue.runtime.backoff import Backoff
from jobqueue.runtime.limits import NAME_PATTERN
from jobqueue.runtime.settings import SettingsError

log = logging.getLogger(__name__)

#: What a broken connection or channel raises (aio-pika's list: AMQP errors, OSError incl. timeouts, ...).
BROKER_ERRORS: tuple[type[BaseException], ...] = aio_pika.exceptions.CONNECTION_EXCEPTIONS

#: Messages carry a priority 0..MAX_PRIORITY; RabbitMQ keeps one sub-queue per level.
MAX_PRIORITY = 3
#: The AMQP heartbeat timeout asked for when the URL names none. RabbitMQ's advice is 5 to 20 s:
#: shorter risks dropping a connection whose process is merely busy for a moment.
HEARTBEAT_SECONDS = 15


@dataclass(frozen=True)
class Topology:
    """Names of the queues for one RABBITMQ_QUEUE setting."""

    #: The setting; the name of the queue every type shared before routing (the legacy queue).
    queue: str

    def job_queue(self, job_type: str) -> str:
        """The queue of ``job_type``'s jobs: ``<queue>.type.<job_type>``."""
        return f"{self.queue}.type.{job_type}"

    @property
    def dead_letter_queue(self) -> str:
        """Where rejected messages go."""
        return f"{self.queue}.dead"

    @property
    def control_exchange(self) -> str:
        """Fanout exchange of JobCancellation notices to every worker."""
        return f"{self.queue}.control"


@dataclass(frozen=True)
class Permissions:
    """What a RabbitMQ user may configure (declare), write (publish, bind into) and read (consume, bind from).

    Each is a regular expression over resource names, as RabbitMQ's set_permissions takes them;
    ``^$`` matches nothing.
    """

    configure: str
    write: str
    read: str


#: Names of the queues the broker itself names (a worker's private queue of control notices).
_SERVER_NAMED = r"amq\.gen-.*"
#: The tail of every type's queue name, ``.type.<name>`` (NAME_PATTERN's names and no others).
_TYPE_QUEUES = rf"\.type\.{NAME_PATTERN.pattern}"


def job_service_permissions(topology: Topology) -> Permissions:
    """The job service declares the topology, publishes jobs (default exchange) and notices.

    It needs read on the queues it declares with a dead-letter route (RabbitMQ asks it of
    whoever declares one), and consumes from just one: the legacy ``<queue>``, whose messages
    it moves to their types' queues.
    """
    queue = _quoted(topology.queue)
    return Permissions(
        configure=rf"^{queue}(\.dead|\.control|{_TYPE_QUEUES})?$",
        write=rf"^(amq\.default|{queue}\.control)$",
        read=rf"^{queue}({_TYPE_QUEUES})?$",
    )


def worker_permissions(topology: Topology) -> Permissions:
    """A worker declares the queues it consumes, consumes jobs, hears notices on a queue of its own; publishes nothing.

    Above all it has no write on ``amq.default``: a worker, which runs plug-in code, cannot put a
    job on a queue (and could not make it pass as the job service's anyway: gen/jobqueue/runtime/signing.py).
    Rejected messages reach ``<queue>.dead`` by the queues' dead-letter route, which needs no permission.
    It reads the types' queues and nothing else of the job queue's (not the dead letters, nor the legacy queue).
    """
    queue = _quoted(topology.queue)
    return Permissions(
        configure=rf"^({queue}(\.dead|\.control|{_TYPE_QUEUES})|{_SERVER_NAMED})$",
        write=rf"^{_SERVER_NAMED}$",
        read=rf"^({queue}{_TYPE_QUEUES}|{queue}\.control|{_SERVER_NAMED})$",
    )


def _quoted(name: str) -> str:
    """``name`` as a regular expression matching just it."""
    return re.escape(name)


#: Query keys that look like TLS options but that aiormq ignores (aio-pika's own docstring shows ``ca_certs``):
#: the connection would quietly verify against the system's CAs instead. The value says what to use.
_IGNORED_TLS_KEYS = {"ca_certs": "cafile", "ssl_ca": "cafile", "cert": "certfile", "key": "keyfile"}


def check_url(url: str, variable: str, *, production: bool) -> None:
    """Raise SettingsError for a broker URL whose TLS options would not do what they say.

    A TLS option aiormq does not read, TLS options on a plain ``amqp://`` URL, or, with
    APP_ENV=production, ``no_verify_ssl``, which accepts any certificate (so anyone on the path).
    """
    target = URL(url)
    for key, instead in _IGNORED_TLS_KEYS.items():
        if key in target.query:
            raise SettingsError(f"{variable}: the query key {key}= is not read; use {instead}=")
    tls_keys = {"cafile", "capath", "cadata", "certfile", "keyfile", "no_verify_ssl"} & set(target.query)
    if tls_keys and target.scheme != "amqps":
        raise SettingsError(f"{variable} sets {', '.join(sorted(tls_keys))} but is not amqps:// (no TLS)")
    if production and target.query.get("no_verify_ssl", "0") != "0":
        raise SettingsError(f"{variable}: no_verify_ssl is refused when APP_ENV=production")


async def connect(url: str, *, name: str) -> AbstractConnection:
    """Open a connection (raises on failure; callers own the retry loop)."""
    target = URL(url)
    if "heartbeat" not in target.query:
        target = target.update_query(heartbeat=HEARTBEAT_SECONDS)
    return await aio_pika.connect(target, timeout=5, client_properties={"connection_name": name})


async def declare_control(channel: AbstractChannel, topology: Topology) -> AbstractExchange:
    """Declare the fanout exchange of control notices (cancellations) to every worker."""
    return await channel.declare_exchange(topology.control_exchange, aio_pika.ExchangeType.FANOUT, durable=True)


async def declare_dead_letters(channel: AbstractChannel, topology: Topology) -> AbstractQueue:
    """Declare the dead-letter queue (before any queue that routes to it)."""
    return await channel.declare_queue(topology.dead_letter_queue, durable=True)


async def declare(channel: AbstractChannel, topology: Topology, queue: str) -> AbstractQueue:
    """Declare the dead-letter queue and the job queue ``queue`` (a type's, or the legacy one); returns the latter."""
    await declare_dead_letters(channel, topology)
    return await channel.declare_queue(
        queue,
        durable=True,
        arguments={
            "x-max-priority": MAX_PRIORITY,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": topology.dead_letter_queue,
        },
    )


#: Opens the channel a session works on, on a fresh connection: declares, subscribes, whatever the owner needs.
OpenSession = Callable[[AbstractConnection], Awaitable[AbstractChannel]]
Connect = Callable[..., Awaitable[AbstractConnection]]


class Reconnector:
    """Keeps one session with RabbitMQ up: connect, open it, notice its loss, back off, start over.

    ``open_session`` opens the session's channel on each fresh connection; the
    session is up (``connected``) from its return until that channel or its
    connection closes. Each outage is logged once as a warning (then at debug
    level), and the wait before each new try follows ``backoff``. Only a
    session that lasted at least the backoff's cap starts the backoff over: a
    broker that accepts and then drops every connection is still down.

    ``run`` goes on until cancelled, or until ``stop`` is called: a session
    that is up then ends leaving its connection open (a consumer still has
    acks to send on it), and ``close`` closes it.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str,
        open_session: OpenSession,
        backoff: Backoff | None = None,
        connect: Connect = connect,
    ) -> None:
        self._url = url
        self._name = name
        self._open_session = open_session
        self._backoff = backoff or Backoff(base=0.1, cap=5.0)
        self._connect = connect
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._up = asyncio.Event()
        self._stopping = asyncio.Event()

    @property
    def connected(self) -> bool:
        """Whether a session is up right now."""
        return self._up.is_set()

    @property
    def channel(self) -> AbstractChannel | None:
        """The channel of the session that is up, or was up when ``stop`` was called; None otherwise."""
        return self._channel

    async def wait_connected(self) -> None:
        """Wait until a session is up (at start, or after an outage)."""
        await self._up.wait()

    def stop(self) -> None:
        """Ask ``run`` to end; a session that is up keeps its connection until ``close``."""
        self._stopping.set()

    async def run(self) -> None:
        """Keep a session up until ``stop`` is called (returns) or the task is cancelled."""
        fields = {"connection": self._name}
        quiet = False  # whether the current outage was logged already
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                await self._session()
                error = "connection closed"
            except BROKER_ERRORS as exc:
                error = repr(exc)
            except Exception as exc:
                # A bug rather than an outage; still, the session must come back.
                log.exception("unexpected error in the RabbitMQ session", extra=fields)
                error = repr(exc)
            was_up = self.connected
            self._up.clear()
            if self._stopping.is_set():
                return
            await self.close()
            if was_up:
                log.warning("lost RabbitMQ; reconnecting", extra={**fields, "error": error})
                if time.monotonic() - started >= self._backoff.cap:
                    self._backoff.reset()
            elif not quiet:
                log.warning("RabbitMQ unreachable; retrying", extra={**fields, "error": error})
            else:
                log.debug("RabbitMQ still unreachable", extra={**fields, "error": error})
            quiet = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._backoff.next_delay())

    async def _session(self) -> None:
        """Connect and open the session; return once its channel or connection closes, or stop is asked for."""
        lost = asyncio.Event()
        self._connection = connection = await self._connect(self._url, name=self._name)
        connection.close_callbacks.add(lambda *_: lost.set())
        channel = await self._open_session(connection)
        channel.close_callbacks.add(lambda *_: lost.set())
        if channel.is_closed or connection.is_closed:
            lost.set()  # closed before its callback was there to say so
        self._channel = channel
        self._up.set()
        stopping = asyncio.create_task(self._stopping.wait())
        dropped = asyncio.create_task(lost.wait())
        try:
            await asyncio.wait({stopping, dropped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            dropped.cancel()

    async def close(self) -> None:
        """Close the connection, if any (``run`` should have returned or been cancelled first)."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and not connection.is_closed:
            try:
                await connection.close()
            except BROKER_ERRORS as error:
                log.debug("error closing the RabbitMQ connection", extra={"error": repr(error)})
