"""A TCP proxy a test owns, to cut a service off from PostgreSQL, RabbitMQ or another service.

Faults are injected here, never by stopping the shared servers. ``cut()`` drops
every open connection and refuses new ones (as a dead host behind a firewall
rejecting would); ``restore()`` lets connections through again.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target``; runs its own event loop in a thread."""

    def __init__(self, target_host: str, target_port: int, *, source_address: str | None = None) -> None:
        """``source_address``: the address the proxy connects to ``target`` from (``127.0.0.2``, say), so a
        server sees the proxy's clients as another host than the test's own direct ones."""
        self._target = (target_host, target_port)
        self._local = (source_address, 0) if source_address else None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="tcp-proxy")
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._cut = False
        self.port = 0

    def start(self) -> int:
        """Start listening on a free port; returns it."""
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop
        ).result()
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    def cut(self) -> None:
        """Drop every connection through the proxy and refuse new ones until ``restore()``."""
        asyncio.run_coroutine_threadsafe(self._cut_all(), self._loop).result()

    def is_cut(self) -> bool:
        """Whether connections are being refused."""
        return self._cut

    def restore(self) -> None:
        """Let connections through again."""
        self._cut = False

    def stop(self) -> None:
        """Close everything and end the thread."""
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _cut_all(self) -> None:
        self._cut = True
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _shutdown(self) -> None:
        await self._cut_all()
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        writers = [client_writer]
        try:
            if self._cut:
                return
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target, local_addr=self._local)
            writers.append(upstream_writer)
            if self.is_cut():  # cut while we were connecting
                return
            self._writers.update(writers)
            await asyncio.gather(
                self._pipe(client_reader, upstream_writer),
                self._pipe(upstream_reader, client_writer),
            )
        except OSError:
            pass
        finally:
            for writer in writers:
                writer.transport.abort()
            self._writers.difference_update(writers)
            self._handlers.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError, RuntimeError):
            if not writer.transport.is_closing():
                writer.write_eof()
