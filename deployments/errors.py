"""Errors a stage reports to its client as a gRPC status, not as a crash."""

from __future__ import annotations

import grpc


class StageError(Exception):
    """Raised for bad client input or a refused request; ends that stream only."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details

    def __reduce__(self) -> tuple[type[StageError], tuple[grpc.StatusCode, str]]:
        return StageError, (self.code, self.details)  # Ray pickles it to the proxy


def invalid(details: str) -> StageError:
    return StageError(grpc.StatusCode.INVALID_ARGUMENT, details)
