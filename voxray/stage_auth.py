"""The stages' shared secret: every stage's gRPC methods and the LLM's HTTP API require
it, the gateway and the command-line clients send it.

It comes from the environment (`VOXRAY_STAGE_TOKEN`), else from this checkout's
`.voxray/stage_token` (mode 0600), which `voxray up` makes when neither exists; `voxray
up` hands it to the replicas (each application's runtime_env) and to the gateway, and
the command-line clients on this machine read the file. Compared in constant time.
With no token anywhere, nothing is required.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

import grpc

from voxray import REPO_ROOT

TOKEN_ENV = "VOXRAY_STAGE_TOKEN"
MISSING = "missing or wrong stage token (send `authorization: Bearer <VOXRAY_STAGE_TOKEN>`)"


def token_file() -> Path:
    return Path(os.environ.get("VOXRAY_STATE_DIR") or REPO_ROOT / ".voxray") / "stage_token"


def stage_token() -> str | None:
    token = os.environ.get(TOKEN_ENV)
    if not token and token_file().is_file():
        token = token_file().read_text().strip()
    return token or None


def ensure_token() -> str:
    """The token, made (and kept in the token file) if there is none; put in the
    environment, so the processes started from here (the gateway, Ray's) have it."""
    token = stage_token()
    if token is None:
        token = secrets.token_urlsafe(24)
        path = token_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
    os.environ[TOKEN_ENV] = token
    return token


def accepts(authorization: str | None, token: str | None = None) -> bool:
    """Whether an `authorization` value carries the token (any value, if none is set)."""
    token = token if token is not None else stage_token()
    if token is None:
        return True
    return hmac.compare_digest((authorization or "").encode(), f"Bearer {token}".encode())


def metadata_accepts(metadata: Iterable[tuple[str, str | bytes]]) -> bool:
    value = next((v for k, v in metadata if k.lower() == "authorization"), None)
    return accepts(value.decode() if isinstance(value, bytes) else value)


class _WithToken:
    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata()
        given = details.metadata
        if isinstance(given, grpc.aio.Metadata):
            for key in given.keys():
                for value in given.get_all(key):
                    metadata.add(key, value)
        else:
            for key, value in given or ():
                metadata.add(key, value)
        metadata.add(*self._header)
        return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata,
                                          details.credentials, details.wait_for_ready)


# grpc.aio files an interceptor under the first kind of call it is for: one class each
class _UnaryUnary(_WithToken, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return await continuation(self._details(details), request)


class _UnaryStream(_WithToken, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return await continuation(self._details(details), request)


class _StreamUnary(_WithToken, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, details, requests):  # type: ignore[no-untyped-def]
        return await continuation(self._details(details), requests)


class _StreamStream(_WithToken, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, details, requests):  # type: ignore[no-untyped-def]
        return await continuation(self._details(details), requests)


def stage_channel(target: str, token: str | None = None) -> grpc.aio.Channel:
    """A channel to the stages (Serve's gRPC proxy) whose calls carry the token."""
    token = token if token is not None else stage_token()
    interceptors = [kind(token) for kind in (_UnaryUnary, _UnaryStream, _StreamUnary,
                                              _StreamStream)] if token else None
    return grpc.aio.insecure_channel(target, interceptors=interceptors)
