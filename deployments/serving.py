"""Glue between stage services and Serve's gRPC proxy (the deployment.py files' only)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import grpc
from ray.serve.grpc_util import RayServegRPCContext

from deployments.errors import StageError
from voxray.stage_auth import MISSING, metadata_accepts

log = logging.getLogger(__name__)
T = TypeVar("T")


async def relay_with_status(
    events: AsyncIterator[object], grpc_context: RayServegRPCContext | None
) -> AsyncIterator[object]:
    """Yield a stream's events; turn a StageError into the call's gRPC status.

    Serve keeps a status set on the context when the method then raises, so the
    client sees e.g. INVALID_ARGUMENT with our message instead of a bare INTERNAL.
    A call without the stage token ends UNAUTHENTICATED before the service sees it.
    """
    try:
        if grpc_context is not None and not metadata_accepts(
                grpc_context.invocation_metadata()):
            raise StageError(grpc.StatusCode.UNAUTHENTICATED, MISSING)
        async for event in events:
            yield event
    except StageError as e:
        if grpc_context is not None:
            grpc_context.set_code(e.code)
            grpc_context.set_details(e.details)
        log.info("stream ended with %s: %s", e.code.name, e.details)
        raise
    except Exception as e:
        if grpc_context is not None:
            grpc_context.set_code(grpc.StatusCode.INTERNAL)
            grpc_context.set_details(f"{type(e).__name__}: {e}")
        log.exception("stream failed")
        raise


async def reply_with_status(reply: Awaitable[T], grpc_context: RayServegRPCContext | None) -> T:
    """A unary call's reply; a StageError becomes the call's gRPC status (as above)."""
    async def one() -> AsyncIterator[T]:
        yield await reply

    async for out in relay_with_status(one(), grpc_context):
        return out  # type: ignore[return-value]
    raise AssertionError("unreachable")
