"""The gRPC face of the auth service: protobuf in, domain calls, protobuf out; nothing else."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from auth_svc.accounts import Accounts
from auth_svc.store import User
from auth_svc.tokens import TOKEN_TYPE
from jobqueue.auth.v1 import auth_pb2, auth_pb2_grpc
from jobqueue.runtime.peers import client_address

#: The full name health and reflection know the service by.
SERVICE_NAME = auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name


def timestamp(instant: datetime) -> timestamp_pb2.Timestamp:
    """``instant`` as a protobuf Timestamp."""
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(instant)
    return message


def user_message(user: User) -> auth_pb2.User:
    """The account as its owner sees it (never the password hash)."""
    return auth_pb2.User(id=str(user.id), email=user.email, name=user.name, created_at=timestamp(user.created_at))


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    """jobqueue.auth.v1.AuthService over an Accounts; errors are raised and mapped by the server's interceptor."""

    def __init__(self, accounts: Accounts) -> None:
        self._accounts = accounts

    async def Register(
        self, request: auth_pb2.RegisterRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> auth_pb2.RegisterResponse:
        """Create an account."""
        client = client_address(context.peer())
        user = await self._accounts.register(request.email, request.password, request.name, client=client)
        return auth_pb2.RegisterResponse(user=user_message(user))

    async def Login(
        self, request: auth_pb2.LoginRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> auth_pb2.LoginResponse:
        """Trade credentials for an access token."""
        session = await self._accounts.login(request.email, request.password, client=client_address(context.peer()))
        return auth_pb2.LoginResponse(
            access_token=session.token.token,
            token_type=TOKEN_TYPE,
            expires_at=timestamp(session.token.expires_at),
            user=user_message(session.user),
        )
