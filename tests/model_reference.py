"""The reference model of the model-based test: which runs must happen.

A plain-Python account of the scheduler's promises, written from the README
(and, where it is silent, from what a careful user expects: each such place
says so). It knows every task's definition, its next due time, its pending
retries, manual runs, held and parked occurrences, and whether the task or
the whole scheduler is paused. When time moves it walks the due events in
time order, exactly as a scheduler on a virtual clock must handle them,
and for each run it predicts it looks the run up in the execution log of
the step (``expect_run``): a run that must happen and did not, a run that
happened twice or at the wrong time, a run nobody predicted, is a
violation. Where the README allows two behaviours (for example a run
released late when a misfire grace time is set: it may run or be skipped),
the prediction is *optional* and the model follows what happened.

Time: the scheduler's clock (``now``); wall = now + ``shift`` (the test may
step the wall clock). Runs take no time on the virtual clock in the inline
variant, so a run's failure time is its start time.

Restrictions that keep predictions exact (the test only generates these):
dependents are one-shots, due at a quarter second off the half-second grid
that every other event sits on, so a dependent never ties with its
dependency at one instant (the order of two events at one instant is the
heap's business, not the README's).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Tuple

from pysched_lightning import TaskStatus as S

ONE_SHOT = ("once", "cronnum")
RECURRING = ("recur", "cron")
FAILED = (S.ERROR, S.TIMEOUT, S.CANCELED, S.INTERRUPTED)  # (interrupted: by a crash)
#: Times closer than this are the same instant (the virtual clock is exact).
EPS = 1e-6


class Violation(AssertionError):
    """The scheduler did something the model says it must not (or did not do
    what it must)."""


@dataclass(frozen=True)
class Definition:
    """What ``delay()`` was given: trigger, interval, priority, the task's
    arguments (which attempts fail) and the options."""

    kind: str
    interval: Any
    priority: int = 1
    fail_on: Tuple[int, ...] = ()
    retries: Optional[int] = None
    retry_delay: Optional[float] = None
    retry_backoff: Optional[float] = None
    misfire_grace_time: Optional[float] = None
    coalesce: Optional[bool] = None
    max_instances: Optional[int] = None
    timeout: Optional[float] = None
    depend_on: Tuple[str, ...] = ()

    @property
    def one_shot(self) -> bool:
        return self.kind in ONE_SHOT

    def trigger(self) -> Tuple[str, Any]:
        """delay()'s trigger and interval."""
        if self.kind == "once":
            return "once", self.interval
        if self.kind == "cronnum":
            return "cron", self.interval
        if self.kind == "recur":
            return "recur", self.interval
        return "cron", f"*/{self.interval} * * * * *"

    def options(self) -> Dict[str, Any]:
        """The keyword options given to delay() (None ones left out)."""
        names = ("retries", "retry_delay", "retry_backoff", "misfire_grace_time",
                 "coalesce", "max_instances", "timeout")
        given = {name: getattr(self, name) for name in names
                 if getattr(self, name) is not None}
        if self.depend_on:
            given["depend_on"] = list(self.depend_on)
        return given

    @property
    def grace(self) -> Optional[float]:
        return self.misfire_grace_time

    @property
    def coalescing(self) -> bool:
        return self.coalesce is not False

    def retry_wait(self, attempt: int) -> float:
        delay = self.retry_delay or 0.0
        return delay * (self.retry_backoff or 1.0) ** (attempt - 1)

    def retries_allowed(self) -> int:
        return self.retries or 0


@dataclass
class Pending:
    """A run outside the regular slots: a retry, a manual run, or a run
    made but held (its task paused)."""

    kind: str  # 'retry' | 'manual' | 'held'
    due: float
    attempt: int = 1
    manual: bool = False
    #: The wall time its execution will report as scheduled.
    scheduled_wall: float = 0.0
    #: For a held run: the definition it was made with (its arguments).
    definition: Optional[Definition] = None
    #: The regular slot a held attempt-1 run belongs to (one-shots).
    slot_run: bool = False
    #: Which run this is an attempt of (attempts of one run end in order).
    chain: int = 0
    #: Optional: the README allows it to be skipped (late with a grace time).
    lenient: bool = False
    seq: int = 0
    #: A retry: the wall time of the failure it retries.
    failed_wall: Optional[float] = None


@dataclass
class ModelTask:
    """One definition of a task id (a changed definition is a new one)."""

    #: The label its runs log (in its arguments): unique per definition.
    key: str
    tid: str
    named: bool
    definition: Definition
    state: str = "scheduled"  # scheduled | finished | canceled | gone
    #: The next slot's due time (scheduler clock), None when none is scheduled.
    next_due: Optional[float] = None
    #: A recurring task's grid: slot k is due at anchor + k * interval.
    anchor: float = 0.0
    #: The wall clock's shift when that grid was laid.
    grid_shift: float = 0.0
    paused: bool = False
    #: A one-shot occurrence that came due and waits: (due, why) with why
    #: 'dep' (a dependency has not completed) or 'pause'.
    parked: Optional[Tuple[float, str]] = None
    #: The one-shot's slot came due: nothing is scheduled after it.
    fired: bool = False
    pending: List[Pending] = field(default_factory=list)
    #: What get_status() must say (None: the README leaves it open).
    status: Optional[S] = S.SUSPENDED
    #: The status its last finished run gave it (None: none, or unknown).
    outcome: Optional[S] = None
    executions: int = 0
    #: When its status was last set by a finished run, and by which run (two
    #: runs ending at one instant in an unknown order make it unknown).
    status_at: Optional[float] = None
    status_chain: int = 0
    #: A one-shot put back by resume() after it came due while paused.
    resumed: bool = False
    #: Exploration only: do not compare the status with the scheduler's.
    status_unsure: bool = False
    #: The model cannot predict it (see ``Model._give_up``).
    unpredictable: bool = False

    @property
    def one_shot(self) -> bool:
        return self.definition.one_shot


class Model:
    """The scheduler as the README describes it, on the test's virtual clock."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.shift = 0.0
        self.paused_all = False
        #: The current task of each id (older generations are gone).
        self.tasks: Dict[str, ModelTask] = {}
        self.all: List[ModelTask] = []
        self.fresh: List[Any] = []
        self._seq = 0
        #: (task id, wall time) of every attempt-1 run that executed, over all
        #: definitions of the id (see ``lenient_reused_slots``).
        self.claimed: set = set()
        #: Exploration only: a run whose task id already ran a run due at the
        #: same wall time (under an earlier definition) may be skipped.
        self.lenient_reused_slots = False
        #: Exploration only: a skipped run makes the task's status unknown.
        self.lenient_missed_status = False

    # -- the step protocol ----------------------------------------------------

    def begin(self, executions: List[Any]) -> None:
        """The executions logged since the last step, to be accounted for."""
        self.fresh = list(executions)

    def end(self) -> None:
        """Every execution of the step must have been predicted (those of
        tasks the model gave up on are accepted)."""
        given_up = {task.key for task in self.all if task.unpredictable}
        self.fresh = [e for e in self.fresh if e.label not in given_up]
        if self.fresh:
            first = self.fresh[0]
            raise Violation(f"unexpected execution(s): {[_show(e) for e in self.fresh]} "
                            f"(the model predicted no such run of {first.label!r} at "
                            f"{self.now - _BASE:+.3f})")

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def expect_run(self, task: ModelTask, attempt: int, manual: bool, scheduled_wall: float,
                   definition: Definition, optional: bool = False) -> Optional[Any]:
        """The execution of this run, taken from the step's log; a missing
        run that must happen is a violation."""
        key = (task.key, attempt, manual, round(scheduled_wall, 3))
        slot = (task.tid, round(scheduled_wall, 3))
        if self.lenient_reused_slots and attempt == 1 and not manual and slot in self.claimed:
            optional = True
        for index, execution in enumerate(self.fresh):
            if (execution.label, execution.attempt, execution.manual,
                    round(execution.scheduled, 3)) == key:
                del self.fresh[index]
                if abs(execution.at - self.now) > EPS:
                    raise Violation(f"{_show(execution)} started at "
                                    f"{execution.at - _BASE:+.3f}, the model says "
                                    f"{self.now - _BASE:+.3f}")
                allowed = {attempt in definition.fail_on,
                           attempt in task.definition.fail_on}
                if execution.failed not in allowed:
                    raise Violation(f"{_show(execution)} ran with arguments of neither "
                                    "its own nor its task's current definition")
                task.executions += 1
                if attempt == 1 and not manual:
                    self.claimed.add(slot)
                return execution
        if not optional:
            raise Violation(f"missing run: task {task.tid!r} ({task.key}) attempt {attempt}"
                            f"{' (run_now)' if manual else ''} due at wall "
                            f"{scheduled_wall - _BASE:+.3f} should have run at "
                            f"{self.now - _BASE:+.3f}; ran this step: "
                            f"{[_show(e) for e in self.fresh]}")
        return None

    # -- adding and changing tasks ---------------------------------------------

    def add(self, key: str, tid: str, named: bool, definition: Definition) -> ModelTask:
        task = ModelTask(key, tid, named, definition)
        self._schedule_from_now(task)
        old = self.tasks.get(tid)
        if old is not None and old is not task:
            self._retract(old)
        self.tasks[tid] = task
        self.all.append(task)
        self.process()
        return task

    def _schedule_from_now(self, task: ModelTask) -> None:
        """The task's first due time, from its trigger and the clocks now."""
        definition = task.definition
        task.fired = False
        task.parked = None
        if definition.kind in ONE_SHOT:
            task.next_due = self.now + float(definition.interval)
        elif definition.kind == "recur":
            task.anchor, task.grid_shift = self.now, self.shift
            task.next_due = self.now + float(definition.interval)
        else:
            task.next_due = self._cron_after(definition.interval, self.now + self.shift) \
                - self.shift

    @staticmethod
    def _cron_after(step: int, wall: float) -> float:
        """The first wall instant strictly after *wall* on a '*/step' seconds grid."""
        slot = math.floor(wall / step) * step + step
        while slot <= wall:
            slot += step
        return float(slot)

    def _next_slot(self, task: ModelTask, after: float) -> float:
        """A recurring task's first slot strictly after *after* (scheduler clock)."""
        definition = task.definition
        if definition.kind == "recur":
            step = float(definition.interval)
            k = max(1, math.floor((after - task.anchor) / step) + 1)
            while task.anchor + k * step <= after + EPS:
                k += 1
            while k > 1 and task.anchor + (k - 1) * step > after + EPS:
                k -= 1
            return task.anchor + k * step
        return self._cron_after(definition.interval, after + self.shift) - self.shift

    def _retract(self, task: ModelTask) -> None:
        """A changed definition replaces this one: nothing of it runs any more."""
        task.state = "gone"
        task.next_due = None
        task.pending = []
        task.parked = None

    def cancel(self, task: ModelTask, reason: str = "user") -> None:
        """Stop a task: no further runs; its dependents are canceled too
        (README: a dependency that ends CANCELED cancels the dependent)."""
        if task.state != "scheduled":
            return
        task.state = "canceled"
        task.status = S.CANCELED
        task.next_due = None
        task.pending = []
        task.parked = None
        self._fail_dependents(task.tid)

    def modify(self, task: ModelTask, definition: Definition) -> None:
        """modify(): later runs use the new definition; the schedule is kept."""
        task.definition = definition

    def reschedule(self, task: ModelTask, definition: Definition) -> None:
        """reschedule(): the next run follows the new trigger, from now."""
        task.definition = definition
        self._schedule_from_now(task)
        self.process()

    def pause(self, task: Optional[ModelTask]) -> None:
        if task is None:
            self.paused_all = True
        else:
            task.paused = True

    def resume(self, task: Optional[ModelTask]) -> None:
        """Resume one task (held runs go, a one-shot that came due runs now)
        or the whole scheduler (what fell due meanwhile fires now, late)."""
        if task is None:
            self.paused_all = False
            self.process()
            return
        task.paused = False
        for pending in task.pending:
            if pending.kind == "held":
                pending.due = min(pending.due, self.now)
        if task.parked is not None and task.parked[1] == "pause":
            # A one-shot that came due while paused runs on resume (README),
            # when the scheduler runs; one with dependencies waits for them
            # as before (careful user).
            task.next_due, task.parked, task.resumed = task.parked[0], None, True
        self.process()

    def run_now(self, task: ModelTask) -> None:
        """One extra run now (README); a run_now() ignores dependencies."""
        task.pending.append(Pending("manual", self.now, 1, True, self.now + self.shift,
                                    seq=self._next_seq(), chain=self._next_seq()))
        self.process()

    def purge(self) -> List[ModelTask]:
        """purge() with no age: every finished or canceled task goes, except
        those a scheduled task depends on (README)."""
        needed = {dep for task in self.tasks.values() if task.state == "scheduled"
                  for dep in task.definition.depend_on}
        gone = []
        for task in self.tasks.values():
            if task.state in ("finished", "canceled") and task.tid not in needed:
                task.state = "gone"
                gone.append(task)
        return gone

    def restart(self, down: float) -> None:
        """A clean shutdown, *down* seconds without a scheduler, a new one on
        the same store. README: runs that never started run after the
        restart, once (retries that had not started included, run_now()
        runs not); a slot that passed while down runs once at start
        (coalesce) unless misfire_grace_time says skip, and stands for the
        retries the task was owed; a pause of one task
        is stored, a pause of the whole scheduler is not; a canceled task is
        no longer in the store."""
        for task in self.tasks.values():
            if task.state == "canceled":
                task.state = "gone"
            # A run_now() that had not started is not kept (README): the
            # restart owes the task's slots and retries, not a manual run.
            task.pending = [p for p in task.pending if not p.manual]
            if task.one_shot and task.fired and task.parked is None and not task.pending \
                    and task.state == "scheduled" and task.executions:
                self._finish(task)
        self.paused_all = False
        self.now += down
        for task in self.tasks.values():
            # README: a retry whose failure the wall clock now dates after
            # now (it stepped back) waits its delay from now, not the step
            # too; else it is due its delay after the failure's stored wall
            # time (all a restart knows of it, a step since included)
            for pending in task.pending:
                if pending.kind == "retry" and pending.failed_wall is not None:
                    wait = pending.scheduled_wall - pending.failed_wall
                    if pending.failed_wall > self.now + self.shift:
                        pending.due = self.now + wait
                    else:
                        pending.due = pending.failed_wall + wait - self.shift
                    pending.scheduled_wall = pending.due + self.shift
        for task in list(self.tasks.values()):
            # Known limitation (README): a 'recur' grid names its slots by
            # the wall time when it was laid; after a wall-clock step, a
            # restart lays it again from the stored wall time of its next
            # run, off by the step.
            if task.state == "scheduled" and task.definition.kind == "recur" \
                    and task.grid_shift != self.shift and not task.unpredictable:
                self._give_up(task)
        for task in self.tasks.values():
            # README: a recurring task that restarts after its next slot runs
            # that slot instead of the retries it was owed
            if task.state == "scheduled" and not task.one_shot \
                    and task.next_due is not None and task.next_due <= self.now:
                task.pending = [p for p in task.pending
                                if p.kind != "retry" and p.attempt == 1]
            # README: a task's status is its latest run's; the runs it waited
            # for are gone
            if task.status is S.SUSPENDED and not task.pending and task.parked is None \
                    and task.outcome is not None:
                task.status = task.outcome

    def step_wall_back(self, delta: float) -> None:
        """The wall clock steps back by -*delta*: cron times are re-derived
        (README), so a wildcard cron task keeps running at every matching
        wall instant, the repeated ones included (README's rule for a
        repeated hour), instead of going silent for the length of the step."""
        assert delta < 0
        self.shift += delta
        for task in self.tasks.values():
            if task.state == "scheduled" and task.definition.kind == "cron" \
                    and task.next_due is not None:
                task.next_due = self._next_slot(task, self.now)

    # -- time ---------------------------------------------------------------------

    def advance(self, target: float) -> None:
        """Time moves to *target* event by event: every event on time."""
        while True:
            due = self._earliest()
            if due is None or due > target + EPS:
                break
            self.now = max(self.now, due)
            self.process()
        self.now = max(self.now, target)
        self.process()

    def jump(self, target: float) -> None:
        """Time moves to *target* at once: what fell due is handled late."""
        self.now = max(self.now, target)
        self.process()

    def _earliest(self) -> Optional[float]:
        if self.paused_all:
            return None
        times = []
        for task in self.tasks.values():
            if task.state != "scheduled":
                continue
            if task.next_due is not None:
                times.append(task.next_due)
            times.extend(p.due for p in task.pending if not _held_back(task, p))
        return min(times) if times else None

    def process(self) -> None:
        """Handle every event due at ``now``, earliest first."""
        while not self.paused_all:
            event = self._next_event()
            if event is None:
                return
            task, pending = event
            if pending is None:
                self._slot_due(task)
            else:
                task.pending.remove(pending)
                self._pending_due(task, pending)

    def _next_event(self) -> Optional[Tuple[ModelTask, Optional[Pending]]]:
        best: Optional[Tuple[float, int, ModelTask, Optional[Pending]]] = None
        for task in self.tasks.values():
            if task.state != "scheduled":
                continue
            if task.next_due is not None and task.next_due <= self.now + EPS:
                if best is None or (task.next_due, 0) < best[:2]:
                    best = (task.next_due, 0, task, None)
            for pending in task.pending:
                if pending.due <= self.now + EPS and not _held_back(task, pending):
                    if best is None or (pending.due, pending.seq) < best[:2]:
                        best = (pending.due, pending.seq, task, pending)
        return None if best is None else (best[2], best[3])

    # -- a slot comes due -------------------------------------------------------

    def _slot_due(self, task: ModelTask) -> None:
        due = task.next_due
        assert due is not None
        definition = task.definition
        if definition.one_shot:
            task.next_due = None
            task.fired = True
            resumed, task.resumed = task.resumed, False
            self._one_shot_due(task, due, resumed)
            return
        if definition.coalescing:
            task.next_due = self._next_slot(task, max(due, self.now))
        else:
            task.next_due = self._next_slot(task, due)
        if task.paused:
            return  # README: a paused recurring task keeps its place, skips the slot
        late = self.now - due
        grace = definition.grace
        if grace is not None and late > grace + EPS:
            if self.lenient_missed_status:
                task.status_unsure = True
            return  # MISSED: a skipped run does not change the status
        self._start_regular(task, due, definition)

    def _one_shot_due(self, task: ModelTask, due: float, resumed: bool = False) -> None:
        """A one-shot's occurrence is due (or resumed): run it unless paused,
        waiting for a dependency, or past its grace time."""
        definition = task.definition
        if task.paused:
            task.parked = (due, "pause")
            return
        verdict = self._dependencies(task)
        if verdict == "unknown":
            self._give_up(task)
            return
        if verdict == "failed":
            self.cancel(task, "dependency")
            return
        if verdict == "waiting":
            task.parked = (due, "dep")
            return
        late = self.now - due
        grace = definition.grace
        if grace is not None and late > grace + EPS:
            if resumed and task.definition.depend_on:
                # resumed with dependencies: the README does not say which way
                self._start_regular(task, due, definition, optional=True)
                return
            self._missed_one_shot(task)
            return
        self._start_regular(task, due, definition)

    def _dependencies(self, task: ModelTask) -> str:
        """'met', 'waiting' or 'failed' (README: a task runs once every task it
        depends on completed; a dependency ending ERROR/TIMEOUT/CANCELED
        cancels it)."""
        statuses = []
        for dep in task.definition.depend_on:
            other = self.tasks.get(dep)
            if other is None or other.state == "gone":
                statuses.append(S.CANCELED)
            elif other.status is None or other.unpredictable:
                return "unknown"
            else:
                statuses.append(other.status)
        if any(status in FAILED or status is S.MISSED for status in statuses):
            return "failed"
        if all(status is S.COMPLETED for status in statuses):
            return "met"
        return "waiting"

    def _missed_one_shot(self, task: ModelTask) -> None:
        """README: a one-shot whose only run was skipped ends MISSED."""
        task.status = S.MISSED
        if not task.pending:  # (a retry or manual run still owed ends it later,
            self._finish(task)  # and its dependents wait for how it ends)
            self._fail_dependents(task.tid)

    def _start_regular(self, task: ModelTask, due: float, definition: Definition,
                       optional: bool = False) -> None:
        self._execute(task, 1, False, due + self.shift, definition, optional,
                      slot_run=definition.one_shot, chain=self._next_seq())

    # -- extra runs ---------------------------------------------------------------

    def _pending_due(self, task: ModelTask, pending: Pending) -> None:
        definition = pending.definition or task.definition
        if pending.kind in ("retry", "manual"):
            # Its run is made now, dated on the wall clock now: a run_now()
            # asked before a step back reads the corrected time of the ask.
            pending.scheduled_wall = pending.due + self.shift
        if task.paused and pending.kind != "held":
            # README: a pause holds everything of what it pauses
            pending.kind = "held"
            pending.definition = task.definition
            task.pending.append(pending)
            if task.state == "scheduled":
                task.status = S.SUSPENDED
            return
        late = self.now - pending.due
        grace = definition.grace
        optional = pending.lenient or (grace is not None and late > grace + EPS)
        self._execute(task, pending.attempt, pending.manual, pending.scheduled_wall,
                      definition, optional, slot_run=pending.slot_run, chain=pending.chain)

    def _execute(self, task: ModelTask, attempt: int, manual: bool, scheduled_wall: float,
                 definition: Definition, optional: bool, slot_run: bool, chain: int) -> None:
        execution = self.expect_run(task, attempt, manual, scheduled_wall, definition,
                                    optional)
        if execution is None:  # an optional run that was skipped (MISSED)
            if slot_run:
                self._missed_one_shot(task)
            return
        if execution.failed and attempt <= definition.retries_allowed() \
                and task.state == "scheduled":
            wait = definition.retry_wait(attempt)
            task.pending.append(Pending("retry", self.now + wait, attempt + 1, False,
                                        self.now + wait + self.shift, slot_run=slot_run,
                                        seq=self._next_seq(), chain=chain,
                                        failed_wall=self.now + self.shift))
            self._set_status(task, S.SUSPENDED, chain)
            task.outcome = S.ERROR  # (what it reads if the retry is dropped)
            return
        self._set_status(task, S.ERROR if execution.failed else S.COMPLETED, chain)
        if execution.failed:
            self._fail_dependents(task.tid)
        else:
            self._release_dependents(task.tid)
        if task.one_shot and (slot_run or task.fired) and task.parked is None \
                and task.next_due is None and not task.pending:
            self._finish(task)  # its last run: no retry or manual run is owed

    def _set_status(self, task: ModelTask, status: S, chain: int) -> None:
        if task.state == "canceled":
            return
        if task.status_at is not None and abs(task.status_at - self.now) <= EPS \
                and task.status_chain != chain and task.status is not status:
            task.status = None  # two runs ended at one instant: order unknown
        else:
            task.status = status
        task.status_at, task.status_chain = self.now, chain
        task.status_unsure = False
        if status is not S.SUSPENDED:
            task.outcome = task.status

    def _finish(self, task: ModelTask) -> None:
        """A one-shot's last run is over: it leaves ``sched.task`` (README:
        finished one-shots stay queryable until purged)."""
        if task.state == "scheduled":
            task.state = "finished"
            task.next_due = None
            task.parked = None
            task.pending = [p for p in task.pending if p.kind == "manual"]

    def _release_dependents(self, tid: str) -> None:
        for task in list(self.tasks.values()):
            if task.state == "scheduled" and tid in task.definition.depend_on \
                    and task.parked is not None and task.parked[1] == "dep":
                verdict = self._dependencies(task)
                if verdict == "unknown":
                    self._give_up(task)
                elif verdict == "met":
                    due = task.parked[0]
                    task.parked = None
                    if task.paused:
                        task.parked = (due, "pause")
                        continue
                    grace = task.definition.grace
                    late = self.now - due
                    # Released late with a grace time: the README's misfire
                    # rule says skip, a careful user may expect it to run.
                    optional = grace is not None and late > grace + EPS
                    self._start_regular(task, due, task.definition, optional=optional)

    def _give_up(self, task: ModelTask) -> None:
        """A dependency's status is unknown (two of its runs ended at one
        instant, in an order the README leaves open): the model stops
        predicting this task (its runs are accepted, at most once each)."""
        task.unpredictable = True
        task.next_due = None
        task.parked = None
        task.pending = []
        for other in list(self.tasks.values()):
            if other.state == "scheduled" and task.tid in other.definition.depend_on \
                    and not other.unpredictable:
                self._give_up(other)

    def _fail_dependents(self, tid: str) -> None:
        for task in list(self.tasks.values()):
            if task.state == "scheduled" and tid in task.definition.depend_on:
                self.cancel(task, "dependency")

    # -- queries ----------------------------------------------------------------------

    def scheduled_ids(self) -> List[str]:
        return sorted(tid for tid, task in self.tasks.items() if task.state == "scheduled")

    def unpredictable_ids(self) -> List[str]:
        return sorted(tid for tid, task in self.tasks.items() if task.unpredictable)

    def known(self, tid: str) -> bool:
        task = self.tasks.get(tid)
        return task is not None and task.state != "gone"


def _held_back(task: ModelTask, pending: Pending) -> bool:
    """A held run waits for its task's resume."""
    return pending.kind == "held" and task.paused


#: The virtual clock's start, to print times relative to it.
_BASE = 1_700_000_000.0


def _show(execution: Any) -> str:
    kind = " run_now" if execution.manual else ""
    return (f"{execution.label} attempt {execution.attempt}{kind} due "
            f"{execution.scheduled - _BASE:+.3f} at {execution.at - _BASE:+.3f}")


def relabel(definition: Definition, **changes: Any) -> Definition:
    return replace(definition, **changes)
