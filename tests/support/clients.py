"""Small helpers for calling the services from tests: tokens, metadata, error details."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import jwt
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from jobqueue.runtime.secrets import PRIVATE_KEY, WORKER_TOKEN


def mint_token(secrets_dir: Path, subject: uuid.UUID | str | None = None, **claims: Any) -> str:
    """An access token signed with the dev private key, as auth_svc would issue (claims overridable)."""
    now = int(time.time())
    body: dict[str, Any] = {
        "sub": str(subject or uuid.uuid4()),
        "iat": now,
        "exp": now + 600,
        "iss": "jobqueue-auth",
        "aud": "jobqueue",
    }
    body.update(claims)
    return jwt.encode(body, (secrets_dir / PRIVATE_KEY).read_text(), algorithm="EdDSA")


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying ``token``."""
    return (("authorization", f"Bearer {token}"),)


def worker_metadata(secrets_dir: Path) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying the dev worker token."""
    return bearer((secrets_dir / WORKER_TOKEN).read_text().strip())


def error_info(error: grpc.RpcError) -> tuple[grpc.StatusCode, str, list[str]]:
    """(code, ErrorInfo reason, BadRequest fields) of a failed call."""
    status = rpc_status.from_call(error)
    reason = ""
    fields: list[str] = []
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = [v.field for v in bad.field_violations]
    return error.code(), reason, fields
