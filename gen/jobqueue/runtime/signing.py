"""Queue messages signed by the job service and checked by the workers: work cannot be forged through the broker.

A worker runs the job type and payload its message carries. Without a check, whoever could publish
to RabbitMQ (a leaked broker password, another application on the same broker) could put a copy of
a real job's message on the queue with another payload, and the job would complete with a result
computed from it (6 and 11 of 20 such jobs, in two runs, before this module). So every message the
job service publishes carries a signature of its type and body, and a worker acts on a message
only if a signature checks; any other is dead-lettered (a job message) or ignored (a control
notice), and counted.

The signature is HMAC-SHA256 with a key derived from the worker token, a secret the job service
and the workers already share and nobody else holds: nothing new to configure, and it rotates with
the worker token. A holder of the worker token can sign messages, but it can also report any
outcome through UpdateJob already: signing draws the line where trust already was. A genuine
message replayed is a duplicate delivery, which the job service's claims already make harmless
(one outcome per attempt, and only an unfinished job can be claimed).

During a worker-token rotation the job service holds two tokens and signs with both: each
signature names its key (the first 8 bytes of the key's SHA-256, in hex), so a worker that knows
either token finds its own. It costs one HMAC per message and token (about a microsecond each).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Collection, Mapping
from typing import Any

#: The AMQP header holding a message's signatures: a list of "<key id>:<base64 HMAC>".
HEADER = "x-jobqueue-signatures"
#: What the worker token is turned into a signing key with (so the key is not the token itself).
_CONTEXT = b"jobqueue queue message signature v1"


def message_key(worker_token: bytes) -> bytes:
    """The signing key derived from a worker token."""
    return hmac.new(worker_token, _CONTEXT, hashlib.sha256).digest()


def key_id(key: bytes) -> str:
    """A short public name of a signing key, so a verifier picks the right signature without trying each."""
    return hashlib.sha256(key).hexdigest()[:16]


def _mac(key: bytes, kind: str, body: bytes) -> bytes:
    # The type is signed with the body, so a body signed as one kind of message cannot pass as another.
    return hmac.new(key, kind.encode() + b"\0" + body, hashlib.sha256).digest()


class Signer:
    """Signs messages with every worker token ``tokens()`` returns (it may change while running)."""

    def __init__(self, tokens: Callable[[], Collection[bytes]]) -> None:
        self._tokens = tokens
        self._for: Collection[bytes] | None = None
        self._keys: list[tuple[str, bytes]] = []

    def headers(self, kind: str, body: bytes) -> dict[str, Any]:
        """The AMQP headers that sign a message of type ``kind`` with this ``body``."""
        tokens = self._tokens()
        if tokens is not self._for:  # derived once per token set, not per message
            self._keys = [(key_id(key), key) for key in map(message_key, sorted(tokens))]
            self._for = tokens
        return {HEADER: [f"{name}:{base64.b64encode(_mac(key, kind, body)).decode()}" for name, key in self._keys]}


class Verifier:
    """Checks the signatures of messages against the keys of the worker tokens this worker holds."""

    def __init__(self, tokens: Collection[bytes]) -> None:
        self._keys = {key_id(key): key for key in map(message_key, tokens)}

    def check(self, kind: str, body: bytes, headers: Mapping[str, Any] | None) -> str | None:
        """None if a signature of ours checks; else why not: ``"unsigned"`` or ``"bad_signature"``."""
        signatures = (headers or {}).get(HEADER)
        if not isinstance(signatures, list | tuple) or not signatures:
            return "unsigned"
        for signature in signatures:
            text = signature.decode(errors="replace") if isinstance(signature, bytes) else str(signature)
            name, _, encoded = text.partition(":")
            key = self._keys.get(name)
            if key is None:
                continue
            try:
                claimed = base64.b64decode(encoded, validate=True)
            except ValueError:
                return "bad_signature"
            return None if hmac.compare_digest(claimed, _mac(key, kind, body)) else "bad_signature"
        return "bad_signature"  # signed, but with no key this worker holds
