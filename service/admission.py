"""Bounded admission of model work: a full house answers at once, a slow request times out."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from service.batching import Overloaded

T = TypeVar("T")


class RequestTimeout(RuntimeError):
    """A request took longer than the timeout setting."""


class Admission:
    def __init__(self, max_in_flight: int, timeout: float):
        self.max_in_flight = max_in_flight
        self.timeout = timeout
        self.in_flight = 0

    async def run(self, work: Awaitable[T]) -> T:
        """Await `work` if a slot is free (else Overloaded), for at most `timeout` seconds."""
        if self.in_flight >= self.max_in_flight:
            if asyncio.iscoroutine(work):
                work.close()
            raise Overloaded(f"{self.in_flight} requests are already in progress")
        self.in_flight += 1
        try:
            return await asyncio.wait_for(work, self.timeout)
        except asyncio.TimeoutError as error:
            raise RequestTimeout(
                f"The request took longer than {self.timeout:g} s (setting CVAE_REQUEST_TIMEOUT_S) with "
                f"{self.in_flight} requests in flight: retry later, send less work per request, or raise the setting."
            ) from error
        finally:
            self.in_flight -= 1
