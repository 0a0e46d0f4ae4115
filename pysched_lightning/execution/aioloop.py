"""The scheduler's event loop: one asyncio loop in a thread of its own.

``async def`` tasks run here to completion, so the caller never needs a
running loop. The thread is made on first use and the loop is closed at
shutdown. Coroutine functions are recognised at ``delay()``, including
``functools.partial`` objects of them and objects whose ``__call__`` is a
coroutine function.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import logging
import threading
from typing import Any, Callable, Coroutine, Optional

__all__ = ["EventLoopThread", "is_coroutine_function"]

_log = logging.getLogger("pysched_lightning")

_CO_COROUTINE = inspect.CO_COROUTINE


def is_coroutine_function(fn: Any) -> bool:
    """True when calling *fn* makes a coroutine (``async def``, a partial of
    one, or an object with an ``async def __call__``)."""
    code = getattr(fn, "__code__", None)
    if code is not None:  # a plain function: the cheap check
        return bool(code.co_flags & _CO_COROUTINE)
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)
    return call is not None and inspect.iscoroutinefunction(call)


class EventLoopThread:
    """An asyncio event loop running in a daemon thread, started on first use."""

    def __init__(self, name: str = "pysched-event-loop") -> None:
        self._name = name
        #: Guards starting and stopping the loop.
        self._lifecycle = threading.Lock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._closed = False

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lifecycle:
            if self._closed:
                raise RuntimeError("the scheduler's event loop is shut down")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()
                thread = threading.Thread(target=self._serve, args=(loop, ready),
                                          name=self._name, daemon=True)
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Call ``fn(*args)`` in the loop's thread."""
        self._running_loop().call_soon_threadsafe(fn, *args)

    def run(self, coro: Coroutine[Any, Any, Any]) -> "concurrent.futures.Future[Any]":
        """Run *coro* on the loop; its outcome comes back through the future,
        and cancelling the future cancels the coroutine."""
        try:
            loop = self._running_loop()
        except BaseException:
            coro.close()  # never awaited: say nothing at exit
            raise
        return asyncio.run_coroutine_threadsafe(coro, loop)

    def create_task(self, coro: Coroutine[Any, Any, Any]) -> "asyncio.Task[Any]":
        """In the loop's thread: run *coro* as a task of the loop."""
        assert self._loop is not None
        return self._loop.create_task(coro)

    def shutdown(self, wait: bool = True) -> None:
        """Cancel what still runs, stop the loop and (with *wait*) join its thread."""
        with self._lifecycle:
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(_cancel_all_and_stop, loop)
        if wait and thread is not threading.current_thread():
            thread.join()


def _cancel_all_and_stop(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in tasks:
        task.cancel()
    if not tasks:
        loop.stop()
        return
    gathered = asyncio.gather(*tasks, return_exceptions=True)
    gathered.add_done_callback(lambda _: loop.stop())
