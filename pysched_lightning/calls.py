"""A call on its way to a worker process, and where its outcome goes.

A ``Call`` is pickled exactly once, when its pool hands it to the workers; so
after the pool breaks it can still tell whether it ever reached a worker. Its
outcome goes to a ``FutureSink`` (a future: cancelling it cancels the call)
or to a ``CallbackSink`` (``done(result, exception)``, no future to make).
"""
from __future__ import annotations

from concurrent.futures import CancelledError, Future, InvalidStateError
from typing import Any, Callable, Optional, Tuple

from tblib import pickling_support

__all__ = ["Call", "FutureSink", "CallbackSink"]


def _skip() -> None:
    """What a worker runs instead of a call that was taken back."""


class Call:
    """``fn(*args, **kwargs)`` for a worker, sent at most once.

    A pool pickles a call when it hands it to the workers (in its feeder
    thread). When the pool breaks, a call not pickled yet never reached a
    worker and may run elsewhere: the feeder and the pool race for the one
    token, and a call the pool took back is pickled as a no-op.
    """

    __slots__ = ("fn", "args", "kwargs", "sends", "_token", "_pickled")

    def __init__(self, fn: Callable[..., Any], args: Tuple[Any, ...], kwargs: Any,
                 sends: int = 1) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs
        #: How many pools this call has been given to, this one included.
        self.sends = sends
        self._token = [None]
        self._pickled = False

    def __call__(self) -> Any:  # in the worker
        try:
            return self.fn(*self.args, **self.kwargs)
        except BaseException as exc:  # travels back with its traceback
            pickling_support.install(exc)
            raise

    def take_back(self) -> bool:
        """True if the call never reached a worker (and now never will)."""
        try:
            self._token.pop()  # atomic: only one side gets the token
        except IndexError:
            return False
        return True

    def again(self) -> "Call":
        """The same call, to send to another pool."""
        return Call(self.fn, self.args, self.kwargs, self.sends + 1)

    def __reduce__(self) -> Tuple[Any, ...]:
        if self._pickled or self.take_back():
            self._pickled = True
            return Call, (self.fn, self.args, self.kwargs)
        return Call, (_skip, (), {})


class FutureSink(Future):
    """The caller's future for a call; cancelling it cancels the call."""

    _inner: Optional[Future] = None

    def attach(self, inner: Optional[Future]) -> None:
        """Follow *inner*, the pool's future for the call (None once it is
        settled: no cycle through its callbacks, so no work for the gc)."""
        self._inner = inner

    def cancel(self) -> bool:
        inner = self._inner
        if inner is not None and not inner.cancel():
            return False
        return super().cancel()

    def succeed(self, value: Any) -> None:
        try:
            self.set_result(value)
        except InvalidStateError:  # the caller cancelled it meanwhile
            pass

    def fail(self, exc: BaseException) -> None:
        try:
            self.set_exception(exc)
        except InvalidStateError:
            pass

    def drop(self) -> None:
        """The call will not run."""
        Future.cancel(self)


class CallbackSink:
    """Calls ``done(result, None)`` or ``done(None, exception)`` once."""

    __slots__ = ("done",)

    def __init__(self, done: Callable[[Any, Optional[BaseException]], Any]) -> None:
        self.done = done

    def attach(self, inner: Optional[Future]) -> None:
        pass

    def succeed(self, value: Any) -> None:
        self.done(value, None)

    def fail(self, exc: BaseException) -> None:
        self.done(None, exc)

    def drop(self) -> None:
        self.done(None, CancelledError("the call will not run: its pool was shut down"))
