"""Calls on their way to a worker process, and where their outcomes go.

A ``Call`` is pickled exactly once, when its pool hands it to the workers; so
after the pool breaks it can still tell whether it ever reached a worker. Its
outcome goes to a ``FutureSink`` (a future: cancelling it cancels the call)
or to a ``CallbackSink`` (``done(result, exception)``, no future to make).

A ``Batch`` is several calls in one message: a message costs the sending
process more than a quick call takes to run. The worker runs them in
order, timing each, and sends every outcome back on its own, so a result or
an exception that cannot be pickled fails only its call. Its outcomes go to
a ``BatchSink``.
"""
from __future__ import annotations

import copy
import pickle
import time
from concurrent.futures import CancelledError, Future, InvalidStateError
from typing import Any, Callable, List, Optional, Sequence, Tuple

import cloudpickle
from tblib import pickling_support

from ..records.runs import error_line, format_exception

__all__ = ["Call", "Batch", "FutureSink", "CallbackSink", "BatchSink", "Outcome"]

#: A call of a batch: ``(fn, args, kwargs)``.
CallParts = Tuple[Callable[..., Any], Tuple[Any, ...], Any]
#: What a batch's sink reports per call: (key, result, exception, seconds
#: the call took in the worker; None when it never ran there).
Outcome = Tuple[Any, Any, Optional[BaseException], Optional[float]]

#: Results of these types need no pickling check in the worker.
_PLAIN = frozenset({type(None), bool, int, float, str})


def _skip() -> None:
    """What a worker runs instead of a call that was taken back."""


class _SentOnce:
    """Something for a worker that is pickled at most once.

    A pool pickles it when it hands it to the workers (in its feeder
    thread). When the pool breaks, one not pickled yet never reached a
    worker and may go elsewhere: the feeder and the pool race for the one
    token, and one the pool took back is pickled as a no-op.
    """

    __slots__ = ("sends", "_token", "_pickled")

    def __init__(self, sends: int) -> None:
        #: How many pools this has been given to, this one included.
        self.sends = sends
        self._token = [None]
        self._pickled = False

    def take_back(self) -> bool:
        """True if it never reached a worker (and now never will)."""
        try:
            self._token.pop()  # atomic: only one side gets the token
        except IndexError:
            return False
        return True

    def _sending(self) -> bool:
        """Pickling now: True if this goes to a worker, False if taken back."""
        if self._pickled or self.take_back():
            self._pickled = True
            return True
        return False


class Call(_SentOnce):
    """``fn(*args, **kwargs)`` for a worker, sent at most once."""

    __slots__ = ("fn", "args", "kwargs")

    def __init__(self, fn: Callable[..., Any], args: Tuple[Any, ...], kwargs: Any,
                 sends: int = 1) -> None:
        super().__init__(sends)
        self.fn, self.args, self.kwargs = fn, args, kwargs

    def __call__(self) -> Any:  # in the worker
        try:
            return self.fn(*self.args, **self.kwargs)
        except BaseException as exc:  # travels back with its traceback
            pickling_support.install(exc)
            raise

    def again(self) -> "Call":
        """The same call, to send to another pool."""
        return Call(self.fn, self.args, self.kwargs, self.sends + 1)

    def __reduce__(self) -> Tuple[Any, ...]:
        if self._sending():
            return Call, (self.fn, self.args, self.kwargs)
        return Call, (_skip, (), {})


class Batch(_SentOnce):
    """Calls for one worker, in one message, run in order; sent at most once.

    In the worker it returns one ``(seconds, failed, payload)`` per call:
    *payload* is the result or the exception, pickled on its own unless it
    is of a plain type. Its calls are pickled by the batch itself: if one of
    them cannot be, ``refused`` holds the error and the worker runs nothing
    (so the calls may go again, alone, and none runs twice).
    """

    __slots__ = ("calls", "refused")

    def __init__(self, calls: Sequence[CallParts], sends: int = 1) -> None:
        super().__init__(sends)
        self.calls = list(calls)
        self.refused: Optional[Exception] = None

    def __len__(self) -> int:
        return len(self.calls)

    def __call__(self) -> List[Tuple[float, bool, Any]]:  # in the worker
        outcomes = []
        for fn, args, kwargs in self.calls:
            try:
                outcomes.append(_run_in_worker(fn, args, kwargs))
            except BaseException as exc:  # around the call, not in it: it ran
                outcomes.append((0.0, True, cloudpickle.dumps(RuntimeError(
                    f"the call's outcome was lost in the worker: {error_line(exc)}"))))
        return outcomes

    def again(self) -> "Batch":
        """The same calls, to send to another pool."""
        return Batch(self.calls, self.sends + 1)

    def split(self) -> List["Batch"]:
        """Each call as a batch of its own."""
        return [Batch([parts], self.sends) for parts in self.calls]

    def __reduce__(self) -> Tuple[Any, ...]:
        if not self._sending():
            return _unpack, (None,)
        try:
            return _unpack, (cloudpickle.dumps(self.calls),)
        except Exception as exc:  # an argument that cannot be pickled (any more)
            self.refused = exc
            return _unpack, (None,)


def _unpack(data: Optional[bytes]) -> Batch:
    """A batch in the worker (None: one that runs nothing)."""
    return Batch([] if data is None else pickle.loads(data))


def _run_in_worker(fn: Callable[..., Any], args: Tuple[Any, ...],
                   kwargs: Any) -> Tuple[float, bool, Any]:
    start = time.perf_counter()
    try:
        value = fn(*args, **kwargs)
    except BaseException as exc:
        seconds = time.perf_counter() - start
        if exc.__traceback__ is not None:  # start the traceback in the call
            exc.__traceback__ = exc.__traceback__.tb_next
        return seconds, True, _portable_exception(exc)
    seconds = time.perf_counter() - start
    if type(value) in _PLAIN:
        return seconds, False, value
    try:
        return seconds, False, cloudpickle.dumps(value)
    except Exception as error:
        lost = TypeError(f"the result of {_name_of(fn)} could not be pickled to leave the "
                         f"worker process: {error_line(error)}")
        lost.__cause__ = error
        return seconds, True, _portable_exception(lost)


def _portable_exception(exc: BaseException) -> bytes:
    """*exc* pickled with its traceback; if it cannot be, an exception that
    says why and shows its traceback (so the call still fails with it)."""
    try:
        pickling_support.install(exc)
        return cloudpickle.dumps(exc)
    except Exception as error:
        stand_in = TypeError(
            f"the exception raised could not be pickled to leave the worker process "
            f"({error_line(error)}); it was:\n{format_exception(exc)}")
        return cloudpickle.dumps(stand_in)


def _name_of(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None)
    return name if isinstance(name, str) else type(fn).__qualname__


def _decode(encoded: Tuple[float, bool, Any]) -> Tuple[Any, Optional[BaseException], float]:
    """One call's outcome, as the batch sent it, as (result, exception, seconds)."""
    seconds, failed, payload = encoded
    if type(payload) is bytes:
        try:
            payload = pickle.loads(payload)
        except Exception as exc:
            lost = pickle.UnpicklingError(f"the outcome sent back by the worker process "
                                          f"could not be unpickled here: {error_line(exc)}")
            lost.__cause__ = exc
            return None, lost, seconds
    if failed:
        return None, payload, seconds
    return payload, None, seconds


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


class BatchSink:
    """Calls ``done(outcomes)`` with an ``Outcome`` per call of a batch,
    each tagged with its caller's key. When the batch fails as a whole (its
    worker died), each call gets an exception of its own."""

    __slots__ = ("keys", "done")

    def __init__(self, keys: Sequence[Any],
                 done: Callable[[List[Outcome]], Any]) -> None:
        self.keys = list(keys)
        self.done = done

    def attach(self, inner: Optional[Future]) -> None:
        pass

    def part(self, index: int) -> "BatchSink":
        """The sink of the *index*-th call alone."""
        return BatchSink([self.keys[index]], self.done)

    def succeed(self, value: Any) -> None:
        self.done([(key, *_decode(encoded)) for key, encoded in zip(self.keys, value)])

    def fail(self, exc: BaseException) -> None:
        self.done([(key, None, error, None) for key, error in
                   zip(self.keys, _one_each(exc, len(self.keys)))])

    def drop(self) -> None:
        self.fail(CancelledError("the call will not run: its pool was shut down"))


def _one_each(exc: BaseException, count: int) -> List[BaseException]:
    """*exc* for the first call, copies for the others (an exception records
    its traceback: calls must not share one)."""
    errors = [exc]
    for _ in range(count - 1):
        try:
            twin = copy.copy(exc)
        except Exception:  # an exception class that cannot be copied
            twin = exc
        twin.__cause__ = exc.__cause__
        errors.append(twin)
    return errors
