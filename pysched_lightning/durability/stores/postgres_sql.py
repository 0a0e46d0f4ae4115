"""The SQL the PostgreSQL store runs: fixed strings (psycopg prepares a
statement run again and again), each one round trip.

Parameters are named after the fields they carry. A claim is conditional on
the claiming node's live lease, and a write over a claim on the claim being
this node's (``owner`` and ``epoch``): a ``None`` epoch (a store that never
acquired) skips both checks, as in the SQLite store.
"""
from __future__ import annotations

from typing import Dict, Tuple

from ...records.protocols import INTERRUPTED, MISSED, RUN_FIELDS, RUNNING
from .postgres_controls import CONTROL_CHANNEL
from .postgres_schema import CHANNEL
from .rules import CLAIMED_FIELDS, PROCESS_FIELDS, TASK_FIELDS

# The columns of TaskRecord's fields: priority is two, one of them NULL.
TASK_COLUMNS: Tuple[str, ...] = tuple(
    column for name in TASK_FIELDS
    for column in (("priority_int", "priority_real") if name == "priority" else (name,)))
_QUOTED = {name: f'"{name}"' if name in ("trigger", "interval") else name
           for name in TASK_COLUMNS}
SELECT_TASK = ", ".join(_QUOTED[name] for name in TASK_COLUMNS)
PRIORITY = TASK_COLUMNS.index("priority_int")
#: Each column's type, for parameters PostgreSQL cannot infer.
TYPES: Dict[str, str] = {
    "id": "text", "name": "text", "trigger": "text", "interval": "text",
    "priority_int": "bigint", "priority_real": "float8", "fn_ref": "text",
    "fn_pickle": "bytea", "args": "bytea", "kwargs": "bytea", "options": "bytea",
    "schedule": "bytea", "next_run": "float8", "paused": "boolean", "runs": "bigint",
    "missed": "bigint", "status": "integer", "created": "float8", "updated": "float8",
    "info": "text", "task_id": "text", "run": "bigint", "attempt": "bigint", "slot": "text",
    "scheduled": "float8", "started": "float8", "finished": "float8", "duration": "float8",
    "exit_code": "bigint", "result": "text", "error": "text", "traceback": "text",
    "output": "text", "stderr": "text", "reason": "text", "count": "bigint",
    "outcome": "bytea", "owner": "text", "epoch": "bigint",
}


def param(name: str) -> str:
    return f"%({name})s::{TYPES[name]}"


def _params(names: Tuple[str, ...]) -> str:
    return ", ".join(param(name) for name in names)


def _columns(names: Tuple[str, ...]) -> str:
    return ", ".join(_QUOTED.get(name, name) for name in names)


# -- tasks ------------------------------------------------------------------------

LOAD_TASKS = f'SELECT {SELECT_TASK} FROM tasks ORDER BY created, id COLLATE "C"'
LOAD_TASK = f"SELECT {SELECT_TASK} FROM tasks WHERE id = %s"
#: What defines a task, as other nodes see it: a save that changes none of
#: these (only the schedule state every node computes for itself: next_run,
#: runs, missed, status, created, updated) is no change for them, so nodes
#: that apply each other's saves never echo them back and forth.
DEFINITION = ("name", "trigger", "interval", "priority_int", "priority_real", "fn_ref",
              "fn_pickle", "args", "kwargs", "options", "schedule", "paused", "info")
_INSERT_TASK = f"INSERT INTO tasks ({_columns(TASK_COLUMNS)}) VALUES ({_params(TASK_COLUMNS)})"
# The old definition is read (and locked) before the row is written: the
# INSERT selects from it. (Read in the same statement after the write, a
# locking read would skip the row the statement changed.)
SAVE_TASK = f"""WITH old AS (
    SELECT {_columns(DEFINITION)} FROM tasks WHERE id = %(id)s::text FOR UPDATE),
saved AS (INSERT INTO tasks ({_columns(TASK_COLUMNS)})
    SELECT {_params(TASK_COLUMNS)} FROM (SELECT count(*) FROM old) AS read_first
    ON CONFLICT (id) DO UPDATE SET
    {', '.join(f'{_QUOTED[c]} = EXCLUDED.{_QUOTED[c]}' for c in TASK_COLUMNS if c != 'id')}
    RETURNING id),
noted AS (INSERT INTO changes (task_id, kind) SELECT id, 'saved' FROM saved
    WHERE NOT EXISTS (SELECT 1 FROM old WHERE ({_columns(DEFINITION)})
                      IS NOT DISTINCT FROM ({_params(DEFINITION)})))
SELECT count(*) FROM saved"""
ADD_TASK = f"""WITH saved AS ({_INSERT_TASK} ON CONFLICT (id) DO NOTHING RETURNING id),
noted AS (INSERT INTO changes (task_id, kind) SELECT id, 'saved' FROM saved)
SELECT count(*) FROM saved"""
REMOVE_TASK = """WITH gone AS (DELETE FROM tasks WHERE id = %s RETURNING id)
INSERT INTO changes (task_id, kind) SELECT id, 'removed' FROM gone"""
CLEAR_TASKS = """WITH gone AS (DELETE FROM tasks RETURNING id)
INSERT INTO changes (task_id, kind) SELECT id, 'removed' FROM gone"""

_UPDATE_SQL: Dict[Tuple[str, ...], str] = {}


def update_task_sql(columns: Tuple[str, ...]) -> str:
    """The UPDATE of these task columns (the same string each time, so psycopg
    prepares it); with ``paused``, a change when its value changes."""
    sql = _UPDATE_SQL.get(columns)
    if sql is None:
        sets = ", ".join(f"{_QUOTED[name]} = {param(name)}" for name in columns)
        update = f"UPDATE tasks SET {sets} WHERE id = %(id)s::text"
        if "paused" in columns:
            update = f"""WITH old AS (SELECT paused FROM tasks WHERE id = %(id)s::text FOR UPDATE),
new AS ({update} RETURNING paused)
INSERT INTO changes (task_id, kind)
    SELECT %(id)s::text, CASE WHEN new.paused THEN 'paused' ELSE 'resumed' END
    FROM old, new WHERE old.paused <> new.paused"""
        sql = _UPDATE_SQL.setdefault(columns, update)
    return sql


# -- runs ---------------------------------------------------------------------------

RUN_COLUMNS = ", ".join(RUN_FIELDS)
KEY = "task_id = %(task_id)s::text AND slot = %(slot)s::text AND attempt = %(attempt)s::bigint"
_KEY_ARRAYS = "%(task_ids)s::text[], %(slots)s::text[], %(attempts)s::bigint[]"
#: This node holds a live lease (always true for a store that never acquired).
_LIVE = ("SELECT %(epoch)s::bigint IS NULL OR EXISTS (SELECT 1 FROM nodes WHERE "
         "owner = %(owner)s::text AND epoch = %(epoch)s::bigint "
         "AND lease_until > statement_timestamp()) AS ok")


def _mine(table: str) -> str:
    """A row this node may write over: unowned, or its own claim not taken over."""
    return (f"(%(epoch)s::bigint IS NULL OR {table}owner IS NULL OR ({table}owner = "
            f"%(owner)s::text AND {table}epoch = %(epoch)s::bigint "
            f"AND {table}status <> {INTERRUPTED}))")


MINE = _mine("")
_CLAIM = ("task_id", "slot", "attempt", "run", "name", "scheduled", "started")
#: The fields of a claim (a RUNNING row's own).
CLAIMED = _CLAIM
CLAIM_RUN = f"""WITH live AS ({_LIVE}),
ins AS (INSERT INTO runs ({', '.join(_CLAIM)}, status, owner, epoch)
    SELECT {_params(_CLAIM)}, {RUNNING}, %(owner)s::text, %(epoch)s::bigint FROM live WHERE ok
    ON CONFLICT (task_id, slot, attempt) DO NOTHING RETURNING 1)
SELECT (SELECT ok FROM live), (SELECT count(*) FROM ins)"""
CLAIM_RUNS = f"""WITH live AS ({_LIVE}),
ins AS (INSERT INTO runs ({', '.join(_CLAIM)}, status, owner, epoch)
    SELECT c.*, {RUNNING}, %(owner)s::text, %(epoch)s::bigint
    FROM live, unnest({_KEY_ARRAYS}, %(runs)s::bigint[], %(names)s::text[],
                      %(scheduleds)s::float8[], %(starteds)s::float8[]) AS c
    WHERE live.ok
    ON CONFLICT (task_id, slot, attempt) DO NOTHING RETURNING task_id, slot, attempt)
SELECT live.ok, ins.task_id, ins.slot, ins.attempt FROM live LEFT JOIN ins ON true"""
#: Which of these keys are claimed (by any node): none of them can be now.
CLAIMED_KEYS = f"""SELECT r.task_id, r.slot, r.attempt
    FROM unnest({_KEY_ARRAYS}) AS k(task_id, slot, attempt)
    JOIN runs AS r ON r.task_id = k.task_id AND r.slot = k.slot AND r.attempt = k.attempt"""


def _and_claim(save: str, relaxed: bool = False) -> str:
    """*save* (a task's SAVE_TASK or ADD_TASK) and its first run's claim,
    made only if the task was written and this node's lease is live: one
    statement, so one round trip and its own transaction. *relaxed*: its
    commit does not wait for the server's WAL flush (see FLUSH_WAL); a
    fourth column reads the CTE that says so (one nobody reads is not run)."""
    head = save[:save.rindex("SELECT count(*) FROM saved")].rstrip()
    relax = ""
    if relaxed:  # (local to this transaction: the connection's later commits wait)
        relax = "relax AS (SELECT set_config('synchronous_commit', 'off', true)),\n"
    answer = ", (SELECT count(*) FROM relax)" if relaxed else ""
    return f"""{head},
{relax}live AS ({_LIVE}),
claimed AS (INSERT INTO runs ({', '.join(_CLAIM)}, status, owner, epoch)
    SELECT {_params(tuple('claim_' + name for name in _CLAIM))}, {RUNNING},
        %(owner)s::text, %(epoch)s::bigint
    FROM live, (SELECT count(*) AS n FROM saved) AS written
    WHERE live.ok AND written.n = 1 AND %(claim_task_id)s::text IS NOT NULL
    ON CONFLICT (task_id, slot, attempt) DO NOTHING RETURNING 1)
SELECT (SELECT count(*) FROM saved), (SELECT ok FROM live), (SELECT count(*) FROM claimed){answer}"""


_FINISH_SETS = ", ".join(
    f"{name} = COALESCE({param(name)}, {name})" if name in CLAIMED_FIELDS
    else f"{name} = {param(name)}"
    for name in RUN_FIELDS if name not in ("task_id", "slot", "attempt"))
# Over a claim of this node's (or an unowned row), else inserted when the key
# is new; (0, 0) means the row is another node's now.
FINISH_RUN = f"""WITH up AS (UPDATE runs SET {_FINISH_SETS} WHERE {KEY} AND {MINE} RETURNING 1),
ins AS (INSERT INTO runs ({RUN_COLUMNS}, owner, epoch)
    SELECT {_params(RUN_FIELDS)}, %(owner)s::text, %(epoch)s::bigint
    WHERE NOT EXISTS (SELECT 1 FROM up)
    ON CONFLICT (task_id, slot, attempt) DO NOTHING RETURNING 1)
SELECT (SELECT count(*) FROM up), (SELECT count(*) FROM ins)"""
# The same for many records at once (the finishes of a batch): the keys
# written. A key missing from the answer is another node's now.
_RECORDS = "unnest({arrays}) AS f({names})".format(
    arrays=", ".join(f"%({name})s::{TYPES[name]}[]" for name in RUN_FIELDS),
    names=", ".join(RUN_FIELDS))
FINISH_RUNS = f"""WITH f AS (SELECT * FROM {_RECORDS}),
up AS (UPDATE runs SET {', '.join(
    f"{name} = COALESCE(f.{name}, runs.{name})" if name in CLAIMED_FIELDS else f"{name} = f.{name}"
    for name in RUN_FIELDS if name not in ("task_id", "slot", "attempt"))}
    FROM f WHERE runs.task_id = f.task_id AND runs.slot = f.slot AND runs.attempt = f.attempt
    AND {_mine("runs.")} RETURNING runs.task_id, runs.slot, runs.attempt),
ins AS (INSERT INTO runs ({RUN_COLUMNS}, owner, epoch)
    SELECT f.*, %(owner)s::text, %(epoch)s::bigint FROM f WHERE NOT EXISTS (SELECT 1 FROM up
        WHERE up.task_id = f.task_id AND up.slot = f.slot AND up.attempt = f.attempt)
    ON CONFLICT (task_id, slot, attempt) DO NOTHING RETURNING task_id, slot, attempt)
SELECT task_id, slot, attempt FROM up UNION ALL SELECT task_id, slot, attempt FROM ins"""
#: The newest run records of each of many tasks, in one statement (an index
#: scan per task, as runs(task_id, limit) makes): a node loading its tasks.
RECENT_RUNS = f"""SELECT r.* FROM unnest(%(task_ids)s::text[]) AS t(id) CROSS JOIN LATERAL
    (SELECT {RUN_COLUMNS} FROM runs WHERE runs.task_id = t.id
     ORDER BY scheduled DESC, id DESC LIMIT %(limit)s) AS r"""
#: The key's row exists and is no longer this node's to write.
_TAKEN = f"EXISTS (SELECT 1 FROM runs WHERE {KEY} AND NOT {MINE})"
# A claim given back is a change: a node whose own claim of the run was
# refused dropped it ("ran elsewhere"); hearing this, it loads the task again.
RELEASE_RUN = f"""WITH gone AS (DELETE FROM runs WHERE {KEY} AND status = {RUNNING} AND {MINE}
    RETURNING task_id),
noted AS (INSERT INTO changes (task_id, kind) SELECT task_id, 'released' FROM gone)
SELECT (SELECT count(*) FROM gone), {_TAKEN}"""
NOTE_PROCESS = f"""WITH noted AS (UPDATE runs SET pid = %(pid)s::bigint,
    pid_started = %(pid_started)s::bigint WHERE {KEY} AND status = {RUNNING} AND {MINE}
    RETURNING 1)
SELECT (SELECT count(*) FROM noted), {_TAKEN}"""
SET_ASIDE = (f"UPDATE runs SET slot = slot || '~' || COALESCE(run, 0) || '.' || attempt "
             f"WHERE task_id = %s AND (%s = '' OR slot = %s) AND status <> {RUNNING} "
             f"AND strpos(slot, '~') = 0")
# An unowned claim (made by a store that never acquired), or one this owner
# made in an earlier epoch: on this host, when owners name their host.
CLAIMED_PROCESSES = (f"SELECT {', '.join(PROCESS_FIELDS)} FROM runs WHERE status = {RUNNING} "
                     f"AND pid IS NOT NULL AND (owner IS NULL OR (owner = %(owner)s::text "
                     f"AND epoch IS DISTINCT FROM %(epoch)s::bigint))")
_DEAD = (f"status = {RUNNING} AND NOT EXISTS (SELECT 1 FROM nodes AS n WHERE "
         f"n.owner = runs.owner AND n.epoch = runs.epoch "
         f"AND n.lease_until > statement_timestamp())")
_REAP = """WITH expired AS (DELETE FROM nodes WHERE lease_until <= statement_timestamp()),
hit AS (UPDATE runs SET status = {status}, error = %(error)s::text{finished}
    WHERE {dead} RETURNING {columns}),
noted AS (INSERT INTO changes (task_id, kind) SELECT DISTINCT task_id, 'interrupted' FROM hit)
SELECT {result} FROM hit"""
# A concurrent reaper waits for the row lock, then finds the run no longer
# RUNNING: each run is reaped once.
REAP = _REAP.format(status=INTERRUPTED, dead=_DEAD, columns=RUN_COLUMNS, result=RUN_COLUMNS,
                    finished=", finished = extract(epoch FROM statement_timestamp())::float8")
# (As the SQLite store's: a run's end time stays unknown.)
MARK_INTERRUPTED = _REAP.format(status=INTERRUPTED, dead=_DEAD, columns="task_id",
                                result="count(*)", finished="")
# (A stored task's latest claim is kept: a restart reads its claims. The
# latest is the last one made, whatever the wall clock said of the runs.)
PURGE_RUNS = f"""WITH purged AS (DELETE FROM runs WHERE status <> {RUNNING}
    AND COALESCE(finished, started, scheduled) < %(before)s::float8
    AND id NOT IN (SELECT max(kept.id) FROM runs AS kept WHERE kept.status <> {MISSED}
        AND kept.task_id IN (SELECT id FROM tasks) GROUP BY kept.task_id)
    RETURNING 1),
old AS (DELETE FROM changes WHERE at < to_timestamp(%(before)s::float8)
    AND seq < (SELECT max(seq) FROM changes))
SELECT count(*) FROM purged"""
CLEAR_RUNS = "DELETE FROM runs"

# -- nodes and changes ------------------------------------------------------------------

#: The payload of a notification that a node joined or left.
NODES_PAYLOAD = "nodes"
ACQUIRE = f"""INSERT INTO nodes (owner, epoch, lease_until, joined, host, pid)
    VALUES (%(owner)s, nextval('node_epochs'), now() + make_interval(secs => %(lease)s),
            now(), %(host)s, %(pid)s)
    ON CONFLICT (owner) DO UPDATE SET epoch = EXCLUDED.epoch,
        lease_until = EXCLUDED.lease_until, joined = EXCLUDED.joined,
        host = EXCLUDED.host, pid = EXCLUDED.pid
    RETURNING epoch, pg_notify('{CHANNEL}', '{NODES_PAYLOAD}')"""
RENEW = """UPDATE nodes SET lease_until = statement_timestamp() + make_interval(secs => %(lease)s)
    WHERE owner = %(owner)s AND epoch = %(epoch)s AND lease_until > statement_timestamp()
    RETURNING 1"""
RELEASE = ("DELETE FROM nodes WHERE owner = %(owner)s AND epoch = %(epoch)s "
           f"RETURNING pg_notify('{CHANNEL}', '{NODES_PAYLOAD}')")
NODES = """SELECT owner, epoch, host, pid, extract(epoch FROM joined)::float8,
    extract(epoch FROM lease_until)::float8 FROM nodes
    WHERE lease_until > statement_timestamp() ORDER BY joined, owner COLLATE "C" """
NODE_FIELDS = ("owner", "epoch", "host", "pid", "joined", "lease_until")
NOW = "SELECT extract(epoch FROM clock_timestamp())::float8"
CHANGES_SINCE = "SELECT seq, task_id, kind FROM changes WHERE seq > %s ORDER BY seq"
LAST_CHANGE = "SELECT COALESCE(max(seq), 0) FROM changes"
#: What a node listens to: changes, and control requests.
LISTEN = (f"LISTEN {CHANNEL}", f"LISTEN {CONTROL_CHANNEL}")

# The data connection's commits (claims, run records, task counters) do not
# wait for the server's WAL flush: they survive any crash of a node, as a
# SQLite store's commits do (synchronous=NORMAL), and only a crash of the
# database server within ~0.2 s could lose them. A transaction that writes a
# definition (or a claim of a ``synchronous=True`` store) waits for the flush.
RELAXED = "SET synchronous_commit TO off"
STRICT_COMMIT = "SET LOCAL synchronous_commit TO on"
TYPES.update({f"claim_{name}": TYPES[name] for name in _CLAIM})
#: A task stored (replacing, or only if its id is free) with its first
#: run's claim, in one statement (see ``PostgresStore.save_and_claim``).
SAVE_AND_CLAIM = _and_claim(SAVE_TASK)
ADD_AND_CLAIM = _and_claim(ADD_TASK)
#: The same, committed without waiting for the WAL flush: the first run can
#: start one disk flush sooner; FLUSH_WAL then makes the definition durable.
SAVE_AND_CLAIM_SOON = _and_claim(SAVE_TASK, relaxed=True)
ADD_AND_CLAIM_SOON = _and_claim(ADD_TASK, relaxed=True)
#: A transaction that writes WAL (a logical message, no row, no lock) and
#: commits with the flush, which covers every commit before it: what a
#: ``..._SOON`` statement left to flush is durable when this returns. (A
#: transaction that writes no WAL would commit without any flush.)
FLUSH_WAL = "SELECT pg_logical_emit_message(true, 'pysched_lightning', 'flush')"


_CYCLE_SQL: Dict[Tuple[Tuple[str, ...], bool], str] = {}


def cycle_sql(columns: Tuple[str, ...], claim: bool) -> str:
    """A run's end, its task's *columns* (``u_<name>`` parameters) and, with
    *claim*, the claim of the worker's next run (``claim_<name>``), in one
    statement (its own transaction): what a worker commits between two runs,
    in one round trip. Answers (finished over the claim, inserted, lease
    live, claimed)."""
    sql = _CYCLE_SQL.get((columns, claim))
    if sql is not None:
        return sql
    parts = [f"fin AS (UPDATE runs SET {_FINISH_SETS} WHERE {KEY} AND {MINE} RETURNING 1)",
             f"fins AS (INSERT INTO runs ({RUN_COLUMNS}, owner, epoch) "
             f"SELECT {_params(RUN_FIELDS)}, %(owner)s::text, %(epoch)s::bigint "
             f"WHERE NOT EXISTS (SELECT 1 FROM fin) "
             f"ON CONFLICT (task_id, slot, attempt) DO NOTHING RETURNING 1)"]
    if columns:
        sets = ", ".join(f"{_QUOTED.get(name, name)} = %(u_{name})s::{TYPES[name]}"
                         for name in columns)
        parts.append(f"upd AS (UPDATE tasks SET {sets} WHERE id = %(u_id)s::text)")
    answer = "true, 0"
    if claim:
        parts.append(f"live AS ({_LIVE})")
        parts.append(f"cl AS (INSERT INTO runs ({', '.join(_CLAIM)}, status, owner, epoch) "
                     f"SELECT {_params(tuple('claim_' + name for name in _CLAIM))}, "
                     f"{RUNNING}, %(owner)s::text, %(epoch)s::bigint FROM live WHERE live.ok "
                     f"ON CONFLICT (task_id, slot, attempt) DO NOTHING RETURNING 1)")
        answer = "(SELECT ok FROM live), (SELECT count(*) FROM cl)"
    sql = (f"WITH {', '.join(parts)} SELECT (SELECT count(*) FROM fin), "
           f"(SELECT count(*) FROM fins), {answer}")
    return _CYCLE_SQL.setdefault((columns, claim), sql)
