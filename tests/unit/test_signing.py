"""Queue-message signatures: what a worker accepts, and what it refuses and why."""

from __future__ import annotations

from jobqueue.runtime.signing import HEADER, Signer, Verifier, key_id, message_key

OLD, NEW = b"old-worker-token", b"new-worker-token"


def test_a_signed_message_checks_and_any_change_does_not() -> None:
    headers = Signer(lambda: frozenset({OLD})).headers("jobqueue.jobs.v1.JobDelivery", b"body")
    verifier = Verifier([OLD])
    assert verifier.check("jobqueue.jobs.v1.JobDelivery", b"body", headers) is None
    assert verifier.check("jobqueue.jobs.v1.JobDelivery", b"bodY", headers) == "bad_signature"
    assert verifier.check("jobqueue.jobs.v1.JobCancellation", b"body", headers) == "bad_signature"
    assert verifier.check("jobqueue.jobs.v1.JobDelivery", b"body", {}) == "unsigned"
    assert verifier.check("jobqueue.jobs.v1.JobDelivery", b"body", None) == "unsigned"
    assert verifier.check("jobqueue.jobs.v1.JobDelivery", b"body", {HEADER: "not a list"}) == "unsigned"
    assert Verifier([NEW]).check("jobqueue.jobs.v1.JobDelivery", b"body", headers) == "bad_signature"


def test_during_a_rotation_every_message_checks_with_either_token() -> None:
    headers = Signer(lambda: frozenset({OLD, NEW})).headers("kind", b"body")
    assert len(headers[HEADER]) == 2
    assert Verifier([OLD]).check("kind", b"body", headers) is None  # a worker not restarted yet
    assert Verifier([NEW]).check("kind", b"body", headers) is None  # one restarted with only the new
    assert Verifier([OLD, NEW]).check("kind", b"body", headers) is None


def test_signatures_name_their_key_and_arrive_as_bytes_or_text() -> None:
    headers = Signer(lambda: frozenset({OLD})).headers("kind", b"body")
    [signature] = headers[HEADER]
    assert signature.startswith(key_id(message_key(OLD)) + ":")
    assert Verifier([OLD]).check("kind", b"body", {HEADER: [signature.encode()]}) is None  # as AMQP may give it
    assert Verifier([OLD]).check("kind", b"body", {HEADER: [signature[:20] + "!!!"]}) == "bad_signature"


def test_the_key_is_derived_not_the_token_itself() -> None:
    assert message_key(OLD) != OLD
    assert len(message_key(OLD)) == 32
    assert message_key(OLD) != message_key(NEW)


def test_the_signer_follows_its_token_set() -> None:
    tokens = [frozenset({OLD})]
    signer = Signer(lambda: tokens[0])
    assert Verifier([OLD]).check("k", b"b", signer.headers("k", b"b")) is None
    tokens[0] = frozenset({NEW})
    assert Verifier([OLD]).check("k", b"b", signer.headers("k", b"b")) == "bad_signature"
    assert Verifier([NEW]).check("k", b"b", signer.headers("k", b"b")) is None
