"""Admission of model work, fair between callers, and who a caller is.

Who a request comes from is read the same over HTTP and gRPC: its API key (`given_key`, checked by
`which_key`), its address, its id (`request_id_of`).

At most `max_in_flight` requests are admitted (503 beyond) and at most `max_running` of them run at
once; the others wait in one queue per caller. A freed place goes to the waiting caller that holds
the fewest requests (the longest waiting of those, on a tie), so that a caller sending many requests
cannot slow one sending few: the light caller's requests run as soon as a place frees, and callers
that send alike take turns. A caller's waiting requests run in the order they came; but while clients
give up on waiting requests (one left, or timed out, in the last `fifo_after` seconds) the newest runs
first, since its client is the one surely still waiting (adaptive LIFO: Maurer, "Fail at Scale",
ACM Queue 2015), unless one has waited longer than `fifo_after`: then the oldest does, so that none
waits much longer.

A caller may hold at most its share of `max_in_flight` and, when a rate is set, send at most that
rate (429 with Retry-After beyond). A request that times out or is cancelled (its client left, see
service.http.middleware.CancelAbandoned) while it waits leaves its queue without running.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import math
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TypeVar

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from service import telemetry
from service.failures import CallerLimited, Overloaded, RequestTimeout

T = TypeVar("T")

# who sends the request being handled: `key-N` (the Nth of CVAE_API_KEYS), or its address without keys;
# set by the HTTP and gRPC key checks
CALLER: ContextVar[str] = ContextVar("caller", default="")
_REQUEST_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


def address_of(client) -> str:
    """A caller known by its address (no API keys): the host of an ASGI client (host, port)."""
    return client[0] if client else "unknown"


def given_key(headers: dict[bytes, bytes]) -> bytes | None:
    """The API key of a request's headers (or gRPC metadata), lower-case names to values: X-API-Key: KEY,
    else Authorization: Bearer KEY."""
    given = headers.get(b"x-api-key")
    authorization = headers.get(b"authorization", b"")
    if given is None and authorization[:7].lower() == b"bearer ":
        given = authorization[7:].strip()
    return given


def which_key(keys: list[bytes], given: bytes) -> int | None:
    """The index of `given` among `keys` (None: not one of them), every key compared in constant time."""
    found = None
    for index, key in enumerate(keys):
        if hmac.compare_digest(given, key):
            found = index
    return found


def request_id_of(given: str) -> str:
    """The id a client gave its request (X-Request-ID), when it is short and plain; else a new one."""
    return given if 0 < len(given) <= 128 and set(given) <= _REQUEST_ID_CHARS else uuid.uuid4().hex


class Admission:
    def __init__(
        self,
        max_in_flight: int,
        timeout: float,
        max_running: int | None = None,
        caller_share: float = 1.0,
        caller_rate: str = "",
        fifo_after: float = 2.0,
        clock: Callable[[], float] | None = None,
    ):
        """`clock` tells the seconds that fifo_after's windows count (default: the event loop's time)."""
        self.max_in_flight = max_in_flight
        self.timeout = timeout
        self.max_running = max_running or max_in_flight
        self.fifo_after = fifo_after
        self._clock = clock
        self.caller_limit = max(1, math.floor(caller_share * max_in_flight))
        self.caller_rate = parse(caller_rate) if caller_rate else None
        self._limiter = MovingWindowRateLimiter(MemoryStorage()) if caller_rate else None
        self.in_flight = 0
        self.running = 0
        self._held: dict[str, int] = {}  # caller -> requests admitted
        self._waiting: dict[str, deque[tuple[float, asyncio.Future]]] = {}  # caller -> (since, place) waiting
        self._given_up = -math.inf  # when a request last left (or timed out) while it waited
        self._turns: deque[str] = deque()  # the callers with requests waiting, longest waiting first

    async def run(self, work: Awaitable[T]) -> T:
        """Await `work` once admitted and given a place to run (else Overloaded or CallerLimited), for at
        most `timeout` seconds in all; counted against the share and rate of the CALLER."""
        caller = CALLER.get()
        try:
            self._admit(caller)
        except Exception:
            if asyncio.iscoroutine(work):
                work.close()
            raise
        self.in_flight += 1
        self._held[caller] = self._held.get(caller, 0) + 1
        place = self._enqueue(caller)  # None: a place was free
        placed = place is None
        try:
            async with asyncio.timeout(self.timeout) as deadline:  # waiting for a place included
                with telemetry.span("admission.wait", in_flight=self.in_flight, running=self.running):
                    if place is not None:
                        placed = await self._wait(caller, place)
                with telemetry.span("admission.run"):
                    return await work
        except TimeoutError as error:
            if not deadline.expired():  # the work's own TimeoutError, not the request's
                raise
            raise RequestTimeout(
                f"The request took longer than {self.timeout:g} s (setting CVAE_REQUEST_TIMEOUT_S) with "
                f"{self.in_flight} requests in flight: retry later, send less work per request, or raise the setting."
            ) from error
        finally:
            self.in_flight -= 1
            self._held[caller] -= 1
            if not self._held[caller]:
                del self._held[caller]
            if placed or (place is not None and place.done() and not place.cancelled()):
                self._next()  # after the caller's count went down, so that the next turn counts it right
            if asyncio.iscoroutine(work) and inspect.getcoroutinestate(work) == inspect.CORO_CREATED:
                work.close()

    def _admit(self, caller: str) -> None:
        if self.in_flight >= self.max_in_flight:
            raise Overloaded(f"{self.in_flight} requests are already in progress")
        if self._held.get(caller, 0) >= self.caller_limit:
            raise CallerLimited(
                f"This caller already has {self.caller_limit} requests in progress, its share of "
                f"{self.max_in_flight} (setting CVAE_CALLER_SHARE); wait for an answer before sending more.",
                "share",
                1,
            )
        if self._limiter is not None and not self._limiter.hit(self.caller_rate, caller):
            reset = self._limiter.get_window_stats(self.caller_rate, caller).reset_time
            raise CallerLimited(
                f"This caller sent more than {self.caller_rate} (setting CVAE_CALLER_RATE); retry after the "
                "Retry-After delay.",
                "rate",
                max(1, math.ceil(reset - time.time())),
            )

    def _enqueue(self, caller: str) -> asyncio.Future | None:
        """Take a free place (None), or join the caller's queue: the future _next sets on its turn."""
        if self.running < self.max_running and not self._turns:
            self.running += 1
            return None
        loop = asyncio.get_running_loop()
        place = loop.create_future()
        if caller not in self._waiting:
            self._waiting[caller] = deque()
            self._turns.append(caller)
        self._waiting[caller].append((self._now(), place))
        return place

    async def _wait(self, caller: str, place: asyncio.Future) -> bool:
        """Wait for this request's turn (True); cancelled meanwhile, it leaves its queue (a place handed
        over at that moment is passed on by run)."""
        try:
            await place
        except asyncio.CancelledError:
            self._given_up = self._now()
            if place.cancelled() or not place.done():  # not handed over
                self._leave(caller, place)
            raise
        return True

    def _leave(self, caller: str, place: asyncio.Future) -> None:
        queue = self._waiting.get(caller)
        waiting = next((entry for entry in queue or () if entry[1] is place), None)
        if waiting is None:  # _next took it out already: it had been cancelled
            return
        queue.remove(waiting)
        if not queue:
            del self._waiting[caller]
            self._turns.remove(caller)

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    def _next(self) -> None:
        """A running place is free: give it to the next caller in turn, else free it."""
        while self._turns:
            caller = min(self._turns, key=self._held.__getitem__)  # min keeps the first of equals
            self._turns.remove(caller)
            queue = self._waiting[caller]
            oldest, _ = queue[0]
            now = self._now()
            newest_first = now - self._given_up < self.fifo_after and now - oldest <= self.fifo_after
            _, place = queue.pop() if newest_first else queue.popleft()
            if queue:
                self._turns.append(caller)
            else:
                del self._waiting[caller]
            if not place.cancelled():  # else its request is leaving (its handler has yet to run)
                place.set_result(None)  # the place passes on: running stays as it is
                return
        self.running -= 1
