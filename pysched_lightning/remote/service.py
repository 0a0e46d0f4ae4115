"""The Service: runs the tasks clients send over RabbitMQ on its own Scheduler.

Its link's thread receives deliveries in batches and checks each one (size,
signature, framing, fields: a failing one is logged and rejected, never
unpickled); it stores the good ones in the inbox in one transaction,
acknowledges them, and schedules them. Each task runs on the service's
``Scheduler``; its outcome (an event) becomes a signed response that the
outbox stores and publishes to the client's reply queue.

The scheduler stays in memory, with a store of either kind: it holds only
message ids and due times, and the inbox's rows are what survives. With a
PostgreSQL store the inbox also hands over the rows this instance takes
from one whose lease lapsed; they are resumed as after a restart
(resuming.py). What the service keeps in memory of its scheduled tasks is
inflight.py's.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, List, Optional, Tuple

from .. import EventKind, Scheduler, TaskStatus, ThreadPoolExecutor
from .admission import admit, notify, reply_queue_of
from .broker import DEFAULT_BROKER, parameters, redacted, reply_queue, request_queue
from .execution import NotRun, run_in_process, run_in_thread, runs_here
from .inbox import NewMessage
from .inboxes import DEFAULT_LEASE, InboxStore, open_inbox, store_location
from .inflight import InflightTasks
from .link import Delivery, Link
from .messages import RemoteError, TaskHeader, encode_response
from .outbox import Outbox, Outgoing
from .protocol import (DEFAULT_MAX_MESSAGE_SIZE, RejectedMessage, check_limit, check_name,
                       check_number, make_key)
from .resuming import Resumer

__all__ = ["Service"]

_log = logging.getLogger("pysched_lightning.remote")

_OUTCOMES = {EventKind.COMPLETED: "completed", EventKind.FAILED: "error",
             EventKind.TIMEOUT: "timeout", EventKind.CANCELED: "canceled"}
#: A request sent longer ago than this (or this far ahead of the service's
#: clock) is rejected, by default: the replay window, in seconds.
DEFAULT_MAX_MESSAGE_AGE = 24 * 3600.0
#: At stop, how long responses may take to be confirmed before they are left
#: (stored) for the next start.
_PUBLISH_GRACE = 10.0


class Service:
    """Runs tasks from clients that hold *secret*, on its own scheduler.

    ``name`` names the request queue (``<name>.requests``). ``store`` keeps
    every accepted message until its response is published: a SQLite file
    (``sqlite:///PATH`` or a path), then one service runs per name (its
    consumer is exclusive) and per file; or a ``postgresql://`` URL, then
    any number of services of one name share the queue and the database,
    and each message still runs once: an instance that dies (or stalls for
    longer than ``lease`` seconds, default 10) has its messages taken over
    by another one.
    ``secret`` (bytes or str) is required unless ``insecure=True``.
    ``workers`` threads run ordinary tasks (default: one per core); hard
    tasks run in processes. ``prefetch`` bounds the deliveries not yet
    acknowledged. ``fsync=True`` makes every commit survive a power cut, not
    only a crash of the service, at the cost of one fsync per commit.
    ``max_message_age`` (seconds, default a day; None: no limit) is the
    replay window: a request sent longer ago than that, by its signed send
    time, is rejected; so is one sent that far in the future.
    """

    def __init__(self, name: str = "pysched", broker: str = DEFAULT_BROKER,
                 store: str = "sqlite:///service.db", secret: Any = None, *,
                 insecure: bool = False, workers: Optional[int] = None, prefetch: int = 256,
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                 fsync: bool = False,
                 max_message_age: Optional[float] = DEFAULT_MAX_MESSAGE_AGE,
                 lease: float = DEFAULT_LEASE) -> None:
        self.name = check_name("name", name)
        self._params = parameters(broker, f"pysched service {self.name!r}")
        self._broker = redacted(broker)
        self._location = store_location(store)
        self._store = store
        self._key = make_key(secret, insecure)
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                    or workers < 1):
            raise ValueError(f"workers must be a positive int, got {workers!r}")
        self._workers = workers
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) \
                or not 1 <= prefetch <= 65535:
            raise ValueError(f"prefetch must be an int from 1 to 65535, got {prefetch!r}")
        self._prefetch = prefetch
        self._max_size = check_limit(max_message_size)
        if not isinstance(fsync, bool):
            raise TypeError(f"fsync must be True or False, got {fsync!r}")
        self._fsync = fsync
        self._max_age = check_number("max_message_age", max_message_age, allow_min=False)
        self._lease = check_number("lease", lease, allow_min=False, allow_none=False)
        if self._key is None:
            _log.warning("service %r runs without a secret (insecure): anyone who can "
                         "publish to %s can run code in it", self.name, request_queue(self.name))
        self._state_lock = threading.Lock()  # guards _state
        self._state = "new"  # -> starting -> running -> stopping -> stopped
        self._stop_requested = threading.Event()
        self._stopped = threading.Event()
        self._inflight = InflightTasks()
        #: Held while adopted messages are resumed; stop() sets _stop_requested
        #: under it, so none is scheduled once the scheduler may be shut down.
        self._resume_lock = threading.Lock()
        self._inbox: Optional[InboxStore] = None  # the parts, made by start()
        self._scheduler: Optional[Scheduler] = None
        self._outbox: Optional[Outbox] = None
        self._link: Optional[Link] = None
        self._resumer: Optional[Resumer] = None

    def __repr__(self) -> str:
        return f"<Service {self.name!r} on {self._broker} store={self._location!r} {self._state}>"

    @property
    def running(self) -> bool:
        return self._state == "running"

    # ------------------------------------------------------------- lifecycle

    def start(self, block: bool = True) -> None:
        """Open the store, resume what it holds, and consume requests.

        Blocks until :meth:`stop` (or Ctrl-C) unless ``block=False``. Raises
        ``ConnectionError`` if the broker (or a PostgreSQL store) cannot be
        reached now, and ``RuntimeError`` if, with a SQLite store, another
        service of this name or on this store runs; once running, a lost
        connection is retried with a bounded back-off.
        """
        with self._state_lock:
            if self._state != "new":
                raise RuntimeError(f"service {self.name!r} was started already")
            self._state = "starting"
        try:
            self._open()
        except BaseException:
            self._close_parts()
            with self._state_lock:
                self._state = "stopped"
            self._stopped.set()
            raise
        with self._state_lock:
            self._state = "running"
        _log.info("service %r consuming %s on %s (store %s)", self.name,
                  request_queue(self.name), self._broker, self._location)
        if block:
            try:
                self._stopped.wait()
            except BaseException:  # KeyboardInterrupt: stop cleanly, then let it go on
                self.stop()
                raise

    def stop(self, timeout: Optional[float] = None) -> None:
        """Stop consuming, let running tasks finish (at most *timeout* seconds:
        then they are answered "timeout"), publish their responses, close.

        Tasks not yet due stay in the store and run after the next start
        (with a PostgreSQL store, at once on another instance of the name).
        """
        with self._state_lock:
            if self._state == "new":
                raise RuntimeError(f"service {self.name!r} was not started")
            driver = self._state not in ("stopping", "stopped")
            if driver:
                self._state = "stopping"
        if not driver:
            self._stopped.wait()
            return
        with self._resume_lock:
            self._stop_requested.set()
        link = self._link
        if link is not None and link.ready:  # (while reconnecting there is no consumer)
            cancelled = threading.Event()
            link.call(lambda: link.cancel_consuming(cancelled.set))
            cancelled.wait(_PUBLISH_GRACE)
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True, timeout=timeout)
        grace = _PUBLISH_GRACE if link is not None and link.ready else 1.0
        if self._outbox is not None and not self._outbox.wait_idle(grace):
            _log.warning("service %r stops with responses not yet confirmed by the broker; "
                         "they are stored and go out at its next start", self.name)
        self._close_parts()
        with self._state_lock:
            self._state = "stopped"
        self._stopped.set()
        _log.info("service %r stopped", self.name)

    def _open(self) -> None:
        assert self._lease is not None
        self._inbox = open_inbox(self._store, self.name, fsync=self._fsync, lease=self._lease)
        executor = ThreadPoolExecutor(self._workers) if self._workers else None
        self._scheduler = Scheduler(executor=executor)
        self._scheduler.add_listener(self._on_event, kinds=[EventKind.STARTED, *_OUTCOMES])
        self._outbox = Outbox(self.name, self._params, self._inbox, self._key, self._published)
        queue = request_queue(self.name)
        self._link = Link(self._params, f"service {self.name!r}", declare=[queue],
                          consume=queue, prefetch=self._prefetch,
                          # A shared store keeps each message to one run
                          # across instances, so they consume together.
                          exclusive=not self._inbox.shared,
                          on_deliveries=self._accept, on_ready=self._outbox.drain)
        self._outbox.attach(self._link)
        self._resumer = Resumer(self.name, self._inbox, self._outbox, self._max_size,
                                schedule=self._schedule, answer=self._answer,
                                scheduled=self._inflight, lock=self._resume_lock,
                                stopping=self._stop_requested)
        self._resumer.recover(self._location)
        try:
            self._link.start()
        except ConnectionError as exc:
            raise ConnectionError(f"service {self.name!r} cannot reach the broker at "
                                  f"{self._broker}: {exc}") from None
        self._scheduler.start()

    def _close_parts(self) -> None:
        if self._link is not None:
            self._link.stop()
        if self._scheduler is not None and not self._scheduler.stopped:
            self._scheduler.shutdown(wait=True)
        if self._outbox is not None:  # the workers that used it have ended
            self._outbox.close()
        if self._inbox is not None:
            self._inbox.close()

    # ------------------------------------------------------------- accepting (link thread)

    def _accept(self, batch: List[Delivery]) -> None:
        """Check, store (one commit), acknowledge, then schedule a batch."""
        if self._stop_requested.is_set():
            return  # not acknowledged: back to the queue with the connection
        assert self._inbox is not None and self._link is not None
        now = time.time()
        good: List[Tuple[Delivery, TaskHeader, NewMessage]] = []
        for delivery in batch:
            try:
                task = admit(delivery.body, delivery.properties, key=self._key,
                             max_size=self._max_size, service=self.name, now=now,
                             max_age=self._max_age)
            except RejectedMessage as exc:
                self._refuse(delivery, exc)
                continue
            response = None
            if task.delay and task.due < now and not task.enable_overdue:
                response = encode_response(task.message_id, "overdue", exception=RemoteError(
                    f"task {task.message_id!r} was {now - task.due:.3f} s overdue when the "
                    "service received it; not run (enable_overdue=False)"), finished=now,
                    max_size=self._max_size)
            due = task.due if task.delay else now
            good.append((delivery, task, NewMessage(task.message_id, task.client, due,
                                                    delivery.body, response)))
        if not good:
            return
        try:
            fresh = self._inbox.accept([new for _, _, new in good])
        except Exception as exc:  # not stored, so not acknowledged: they come again
            self._link.restart("storing received tasks failed; they go back to the queue", exc)
            return
        self._link.working()
        # Stored, so acknowledged (the rejected ones are settled already): a
        # client's launch returns once the broker hears this, so the
        # acknowledgement goes out before the scheduling.
        self._link.ack(good[-1][0].tag)
        self._link.after_writing(lambda: self._dispatch(good, fresh))

    def _refuse(self, delivery: Delivery, rejected: RejectedMessage) -> None:
        """Log a rejected delivery once, drop it (or dead-letter it), and tell
        the reply queue it names, if it names one of this service's."""
        assert self._link is not None
        _log.warning("service %r rejected message %r: %s", self.name, rejected.message_id,
                     rejected.reason)
        self._link.reject(delivery.tag)
        queue = reply_queue_of(delivery.properties, self.name)
        if queue is not None and rejected.message_id is not None:
            notify(self._link, queue, rejected.message_id, rejected.reason)

    def _dispatch(self, good: List[Tuple[Delivery, TaskHeader, NewMessage]],
                  fresh: List[bool]) -> None:
        assert self._outbox is not None and self._inbox is not None and self._link is not None
        for (_, task, new), is_new in zip(good, fresh):
            first = None if is_new else self._inbox.client_of(task.message_id)
            if first is not None and first != task.client:
                reason = (f"message id {task.message_id!r} was used before by another "
                          "client; not run (ids must be unique)")
                _log.warning("service %r rejected message %r from client %r: %s", self.name,
                             task.message_id, task.client, reason)
                notify(self._link, reply_queue(self.name, task.client), task.message_id, reason)
            elif not is_new:
                _log.info("service %r: message %r arrived again (redelivered or sent "
                          "twice); it was accepted before and is not run again",
                          self.name, task.message_id)
            elif new.response is not None:
                _log.info("service %r: task %r is overdue; not run", self.name, task.message_id)
                self._outbox.put(Outgoing(task.message_id, task.client, new.response, True))
            else:
                self._schedule(task, new.due)

    def _schedule(self, task: TaskHeader, due: float) -> None:
        assert self._scheduler is not None and self._inbox is not None
        message_id = task.message_id
        if message_id in self._scheduler.result:
            # Its run here ended without running it (the row was another
            # instance's then, and is this one's again): the scheduler would
            # keep that finished task instead of adding it anew.
            self._scheduler.purge()
        delay = max(0.0, due - time.time())
        self._inflight.add(message_id, task.client, task.lifetime, active=not delay)
        fn: Any
        args: Tuple[Any, ...]
        if task.hard:
            fn, args = run_in_process, (self._inbox.starter(), message_id)
        else:
            fn, args = run_in_thread, (self._inbox, message_id)
        try:
            self._scheduler.delay("once", delay, task.priority, fn, args,
                                  task_id=message_id, hard=task.hard, timeout=task.lifetime)
        except Exception as exc:
            _log.exception("service %r could not schedule task %r", self.name, message_id)
            self._inflight.pop(message_id)
            self._answer(message_id, task.client, "error", exception=exc)

    # ------------------------------------------------------------- outcomes (any thread)

    def _on_event(self, event: Any) -> None:
        kind, message_id = event.kind, event.task_id
        if kind is EventKind.STARTED:
            self._inflight.started(message_id, time.time())
            return
        if kind is EventKind.CANCELED and self._stop_requested.is_set():
            return  # dropped by the scheduler's shutdown: still accepted, runs after restart
        info, idle = self._inflight.pop(message_id)
        if info is None:
            return
        exception = event.exception
        if isinstance(exception, NotRun):
            _log.warning("service %r: %s", self.name, exception)
            assert self._resumer is not None
            self._resumer.taken_back(message_id)
            return
        result = event.result if kind is EventKind.COMPLETED else None
        status = _OUTCOMES[kind]
        if kind is EventKind.FAILED and event.run is not None \
                and event.run.status is TaskStatus.INTERRUPTED:  # shutdown's timeout cut it
            status = "interrupted"
            exception = RemoteError(f"task {message_id!r} was interrupted: the service "
                                    "shut down while it ran")
        elif kind is EventKind.TIMEOUT:
            limit = f" of {info.lifetime:g} s" if info.lifetime is not None else ""
            exception = TimeoutError(f"task {message_id!r} ran past its lifetime{limit}")
        elif kind is EventKind.CANCELED and exception is None:
            exception = RemoteError(f"task {message_id!r} was canceled")
        self._answer(message_id, info.client, status, result, exception,
                     event.traceback, info.started, alone=idle)

    def _answer(self, message_id: str, client: str, status: str, result: Any = None,
                exception: Optional[BaseException] = None, traceback: Optional[str] = None,
                started: Optional[float] = None, alone: bool = False) -> None:
        assert self._outbox is not None and self._inbox is not None
        body = encode_response(message_id, status, result, exception, traceback, started,
                               time.time(), self._max_size)
        # When its task was the only one due or running, a worker publishes
        # the response itself: no hand-off to the link's thread, the lowest
        # latency. Otherwise the link's thread does, many at once: the most
        # throughput, and no worker waits for the broker while tasks wait for
        # a worker.
        item = Outgoing(message_id, client, body)
        if alone and runs_here(self._inbox):
            self._outbox.send_here(item)
        else:
            self._outbox.put(item)

    def _published(self, count: int) -> None:
        """After responses went out: now and then, let the scheduler forget
        finished tasks (their records would otherwise grow without bound)."""
        if self._inflight.published(count) and self._scheduler is not None:
            self._scheduler.purge()
