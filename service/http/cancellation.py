"""Stop the work of a request whose client has gone: once its body is in, the connection is watched, and
a disconnect before the answer is complete cancels the request's handler. Its model calls stop at the
next chunk (adaptive.estimate_classes and chunks.run await each one; the batchers drop cancelled calls
before they run), and the request ends as ClientDisconnect: logged with status CLIENT_CLOSED, no 5xx."""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect


def _without_body(scope) -> bool:
    """True when the request carries no body, so that its one http.request message may be read at once."""
    headers = dict(scope.get("headers", []))
    return b"transfer-encoding" not in headers and headers.get(b"content-length", b"0") in (b"0", b"")


class CancelAbandoned:
    """ASGI middleware: run the app as a task of its own and cancel it when the client disconnects.

    The connection is read by this middleware only after the app has received the last body chunk
    (bodiless requests: at once), so the body still streams through the app under its own limits."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        inbox: asyncio.Queue = asyncio.Queue()  # what the watcher read, for the app to receive
        watcher: asyncio.Task | None = None
        answered = False
        abandoned = False

        async def watch():
            nonlocal abandoned
            while True:
                message = await receive()
                inbox.put_nowait(message)
                if message["type"] == "http.disconnect":
                    if not answered:
                        abandoned = True
                        handler.cancel()
                    return

        def start_watching():
            nonlocal watcher
            if watcher is None:
                watcher = asyncio.create_task(watch())

        async def app_receive():
            if watcher is not None:
                return await inbox.get()
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                start_watching()
            elif message["type"] == "http.disconnect":
                start_watching()  # so that a later receive() answers the disconnect again
                inbox.put_nowait(message)
            return message

        async def app_send(message):
            nonlocal answered
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = True
            await send(message)

        handler = asyncio.create_task(self.app(scope, app_receive, app_send))
        if _without_body(scope):
            start_watching()
        try:
            return await asyncio.shield(handler)
        except asyncio.CancelledError:
            if not abandoned:  # the server itself is stopping this request: stop the handler, let it unwind
                handler.cancel()
                await asyncio.wait({handler})
                raise
            raise ClientDisconnect from None
        finally:
            if watcher is not None:
                watcher.cancel()
