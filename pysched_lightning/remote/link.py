"""A link to the broker: one thread that owns one RabbitMQ connection.

pika connections are not thread-safe, so everything that touches the
connection happens in this thread, on pika's asynchronous
``SelectConnection``: it declares the queues, consumes one of them (handing
deliveries over in batches, so that one commit and one acknowledgement
cover many), publishes with publisher confirms (many in flight, confirmed
together, where a blocking publish would wait a broker round trip for each),
and reconnects after a lost connection with a bounded back-off. Other
threads hand it work with :meth:`Link.call`.
"""
from __future__ import annotations

import collections
import logging
import threading
from typing import (Any, Callable, Deque, Dict, List, NamedTuple, Optional, Sequence, Set,
                    Tuple)

import pika
import pika.exceptions
import pika.spec

from .broker import Backoff, connect_failure, declare_async
from .frames import TolerantConnection

__all__ = ["Link", "Delivery", "Done"]

#: What a channel operation raises while its connection is closing.
_CLOSING = (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError)

_log = logging.getLogger("pysched_lightning.remote")

#: Called once per publish, in the link's thread: None once the broker
#: confirmed it, else why it was not (then it may or may not have arrived).
Done = Callable[[Optional[BaseException]], None]


class Delivery(NamedTuple):
    tag: int
    properties: Any
    body: bytes


class Link:
    """The thread that owns one broker connection and one channel on it."""

    def __init__(self, params: pika.URLParameters, label: str, *, declare: Sequence[str],
                 consume: Optional[str], prefetch: int, exclusive: bool,
                 on_deliveries: Callable[[List[Delivery]], None],
                 on_ready: Callable[[], None]) -> None:
        self._params = params
        self._label = label
        self._queues = tuple(declare)
        self._consume = consume
        self._prefetch = prefetch
        self._exclusive = exclusive
        self._on_deliveries = on_deliveries
        self._on_ready = on_ready
        self._lock = threading.Lock()  # guards _calls and _connection (for waking it)
        self._calls: Deque[Callable[[], None]] = collections.deque()
        self._connection: Any = None
        self._stopping = threading.Event()
        self._first = threading.Event()  # the first connection is ready, or failed
        self._first_error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name=f"pysched-{label}", daemon=True)
        # Below: the link's thread only.
        self._channel: Any = None
        self._ready = False
        self._consumer_tag: Optional[str] = None
        self._next_tag = 1
        self._unconfirmed: Dict[int, Tuple[str, Done]] = {}  # tag -> (message id, done)
        self._returned: Set[str] = set()  # message ids the broker could not route
        self._declared: Set[str] = set()
        self._declaring: Dict[str, List[Callable[[], None]]] = {}
        self._batch: List[Delivery] = []
        self._after: Deque[Callable[[], None]] = collections.deque()
        self._last_error: Optional[BaseException] = None
        self._why = "broker connection lost"
        self._restarted = False
        self._backoff = Backoff()

    # ------------------------------------------------------------- any thread

    def start(self) -> None:
        """Connect; raises what the first attempt raised if it failed."""
        self._thread.start()
        self._first.wait()
        if self._first_error is not None:
            self._thread.join()
            raise self._first_error

    def call(self, fn: Callable[[], None]) -> None:
        """Run *fn* in the link's thread: soon, or once connected again."""
        with self._lock:
            self._calls.append(fn)
            connection = self._connection
        if connection is not None:
            try:
                connection.ioloop.add_callback_threadsafe(self._run_calls)
            except Exception:
                pass  # closing: the calls run after the next connect

    def stop(self) -> None:
        """Close the connection and end the thread (what is not confirmed is not)."""
        self._stopping.set()
        if self._thread.ident is None:
            return  # never started
        self.call(self._close)
        self._thread.join()

    # ------------------------------------------------------------- the link's thread

    @property
    def ready(self) -> bool:
        return self._ready

    def publish(self, queue: str, body: bytes, properties: Any, done: Done) -> None:
        """Publish to *queue* (declared first if new) with a confirm; *done* hears."""
        if not self._ready:
            done(ConnectionError("not connected to the broker"))
        elif queue in self._declared:
            try:
                self._channel.basic_publish("", queue, body, properties, mandatory=True)
            except _CLOSING as exc:  # the connection is going: the owner sends it again
                done(ConnectionError(f"{self._label}: {exc}"))
                return
            self._unconfirmed[self._next_tag] = (properties.message_id, done)
            self._next_tag += 1
        else:
            self._declare(queue, lambda: self.publish(queue, body, properties, done))

    def ack(self, tag: int) -> None:
        """Acknowledge every delivery up to *tag* (if the connection is going,
        they are delivered again, and recognised)."""
        if self._ready:
            try:
                self._channel.basic_ack(tag, multiple=True)
            except _CLOSING:
                pass

    def reject(self, tag: int) -> None:
        """Drop one delivery (or dead-letter it, if the queue has a policy for that)."""
        if self._ready:
            try:
                self._channel.basic_reject(tag, requeue=False)
            except _CLOSING:
                pass  # delivered again, and rejected again

    def after_writing(self, fn: Callable[[], None]) -> None:
        """Run *fn* in the next pass of the loop, after what is queued (an
        acknowledgement, say) has been written to the socket; if the
        connection ends first, at once."""
        if not self._after:
            self._connection.ioloop.add_callback(self._run_after)
        self._after.append(fn)

    def _run_after(self) -> None:
        while self._after:
            self._after.popleft()()

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        """Run *fn* in the link's thread after *delay* seconds, unless the
        connection ends first."""
        self._connection.ioloop.call_later(delay, fn)

    def restart(self, what: str, error: BaseException) -> None:
        """Drop the connection and connect again after the back-off: what was
        delivered and not acknowledged goes back to the queue. *what* went
        wrong, for the log line."""
        self._last_error = error
        self._why = what
        self._restarted = True
        self._close()

    def working(self) -> None:
        """The owner's side works again after a restart(): back-off from the start."""
        if self._restarted:
            self._restarted = False
            self._backoff.reset()

    def cancel_consuming(self, done: Callable[[], None]) -> None:
        """Stop receiving deliveries; *done* runs once the broker agreed (or now,
        when there is no consumer). Unacknowledged ones go back to the queue."""
        tag, self._consumer_tag, self._consume = self._consumer_tag, None, None
        if tag is None or not self._ready:
            done()
        else:
            self._channel.basic_cancel(tag, callback=lambda frame: done())

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                connection = TolerantConnection(
                    self._params, on_open_callback=self._on_open,
                    on_open_error_callback=self._on_open_error,
                    on_close_callback=self._on_closed)
                with self._lock:
                    self._connection = connection
                try:
                    connection.ioloop.start()  # until _on_closed or _on_open_error stops it
                except Exception as exc:  # a callback failed: start over, do not die
                    _log.exception("%s: unexpected failure; reconnecting", self._label)
                    self._last_error = exc
                    _abandon(connection)
                with self._lock:
                    self._connection = None
                self._lost()
                if not self._first.is_set():
                    self._first_error = _startup_error(self._label, self._params,
                                                       self._last_error)
                    self._first.set()
                    return
                if not self._stopping.is_set():
                    self._stopping.wait(self._backoff.failed(
                        f"{self._label}: {self._why}", self._last_error))
                    self._why = "broker connection lost"
        except Exception as exc:
            _log.exception("%s: the broker link failed", self._label)
            if not self._first.is_set():
                self._first_error = exc
        finally:
            self._first.set()

    def _lost(self) -> None:
        """After a connection ends: tell every publisher its message was not confirmed."""
        self._ready = False
        self._channel = None
        self._declared.clear()
        self._returned.clear()
        self._batch = []  # not acknowledged: the broker delivers them again
        self._run_after()  # their work does not need the connection
        # What waited for a declaration runs now, not connected: publishes
        # report their failure (and are sent again), the rest stops.
        held = [then for waiting in self._declaring.values() for then in waiting]
        self._declaring.clear()
        for then in held:
            then()
        unconfirmed, self._unconfirmed = self._unconfirmed, {}
        error = ConnectionError(f"{self._label}: the connection closed before the broker "
                                "confirmed the message")
        for _, done in unconfirmed.values():
            done(error)

    def _on_open(self, connection: Any) -> None:
        connection.channel(on_open_callback=self._on_channel)

    def _on_open_error(self, connection: Any, error: BaseException) -> None:
        self._last_error = error
        connection.ioloop.stop()

    def _on_closed(self, connection: Any, reason: BaseException) -> None:
        self._ready = False
        if not isinstance(reason, pika.exceptions.ConnectionClosedByClient):
            self._last_error = reason
        connection.ioloop.stop()

    def _on_channel(self, channel: Any) -> None:
        self._channel = channel
        self._next_tag = 1
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_cancel_callback(self._on_cancelled)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(self._on_confirm, callback=lambda frame: self._declare_next(0))

    def _declare_next(self, index: int) -> None:
        if self._channel is None:
            return  # the connection ended meanwhile
        if index < len(self._queues):
            self._declare(self._queues[index], lambda: self._declare_next(index + 1))
        elif self._consume is not None:
            self._channel.basic_qos(prefetch_count=self._prefetch,
                                    callback=lambda frame: self._start_consuming())
        else:
            self._became_ready()

    def _start_consuming(self) -> None:
        self._consumer_tag = self._channel.basic_consume(
            self._consume, self._on_message, exclusive=self._exclusive,
            callback=lambda frame: self._became_ready())

    def _became_ready(self) -> None:
        self._ready = True
        if self._first.is_set():
            _log.info("%s: connected to the broker again", self._label)
        self._first.set()
        if not self._restarted:  # after restart(), the owner says when things work
            self._backoff.reset()
        self._on_ready()
        self._run_calls()

    def _on_channel_closed(self, channel: Any, reason: BaseException) -> None:
        if not isinstance(reason, pika.exceptions.ChannelClosedByClient):
            self._last_error = reason
        self._ready = False
        connection = self._connection
        if connection is not None and connection.is_open:
            connection.close()

    def _on_cancelled(self, frame: Any) -> None:
        # The broker ended our consumer (its queue was deleted): start over.
        self._last_error = ConnectionError(f"{self._label}: the broker cancelled the consumer")
        self._close()

    def _close(self) -> None:
        self._ready = False
        connection = self._connection
        if connection is None:
            return
        try:
            connection.close()
        except pika.exceptions.ConnectionWrongStateError:  # not open (yet, or any more)
            connection.ioloop.stop()

    def _run_calls(self) -> None:
        while True:
            with self._lock:
                if not self._calls or (not self._ready and not self._stopping.is_set()):
                    return
                fn = self._calls.popleft()
            fn()

    def _declare(self, queue: str, then: Callable[[], None]) -> None:
        waiting = self._declaring.get(queue)
        if waiting is not None:
            waiting.append(then)
            return
        self._declaring[queue] = [then]
        declare_async(self._channel, queue, lambda frame: self._declared_ok(queue))

    def _declared_ok(self, queue: str) -> None:
        self._declared.add(queue)
        for then in self._declaring.pop(queue, []):
            then()

    def _on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        if not self._batch:  # hand over everything read in this pass at once
            self._connection.ioloop.call_later(0, self._hand_over)
        self._batch.append(Delivery(method.delivery_tag, properties, body))

    def _hand_over(self) -> None:
        batch, self._batch = self._batch, []
        if batch and self._ready:
            self._on_deliveries(batch)

    def _on_return(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        # Unroutable (its queue was deleted under us): the confirm follows,
        # and reports it as not delivered; it is declared again next time.
        self._returned.add(properties.message_id)
        self._declared.discard(method.routing_key)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        if method.multiple:
            tags = [tag for tag in self._unconfirmed if tag <= method.delivery_tag]
        else:
            tags = [method.delivery_tag] if method.delivery_tag in self._unconfirmed else []
        refused = isinstance(method, pika.spec.Basic.Nack)
        for tag in tags:
            message_id, done = self._unconfirmed.pop(tag)
            if refused:
                done(pika.exceptions.NackError([message_id]))
            elif message_id in self._returned:
                self._returned.discard(message_id)
                done(pika.exceptions.UnroutableError([message_id]))
            else:
                done(None)


def _abandon(connection: Any) -> None:
    """Close a connection whose loop failed; its socket goes with it."""
    try:
        if connection.is_open:
            connection.close()
            connection.ioloop.start()  # until the close completes
    except Exception:
        _log.debug("abandoning a broker connection failed", exc_info=True)


def _startup_error(label: str, params: Any, error: Optional[BaseException]) -> BaseException:
    """What start() raises: RuntimeError if the broker refused what was asked
    (a queue in exclusive use, a queue declared otherwise), else ConnectionError."""
    if isinstance(error, pika.exceptions.ChannelClosedByBroker):
        hint = " (is another service of that name running?)" if error.reply_code == 403 else ""
        return RuntimeError(f"{label}: the broker refused: {error.reply_text}{hint}")
    return ConnectionError(connect_failure(params, error))
