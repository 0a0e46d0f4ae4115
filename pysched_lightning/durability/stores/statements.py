"""The SQL the SQLite store runs: fixed strings, so sqlite3's statement
cache prepares each once."""
from __future__ import annotations

from typing import Tuple

from ...records.protocols import INTERRUPTED, MISSED, RUN_FIELDS, RUNNING
from .rules import CLAIMED_FIELDS, PROCESS_FIELDS, TASK_FIELDS

TASK_COLUMNS = ", ".join(f'"{name}"' for name in TASK_FIELDS)  # 'trigger' is a keyword
RUN_COLUMNS = ", ".join(RUN_FIELDS)
TASK_VALUES = ", ".join("?" * len(TASK_FIELDS))
SAVE_TASK = f"INSERT OR REPLACE INTO tasks ({TASK_COLUMNS}) VALUES ({TASK_VALUES})"
# Values are checked before they get here, so only the primary key can conflict.
ADD_TASK = f"INSERT OR IGNORE INTO tasks ({TASK_COLUMNS}) VALUES ({TASK_VALUES})"
LOAD_TASKS = f"SELECT {TASK_COLUMNS} FROM tasks ORDER BY created, id"
LOAD_TASK = f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?"
REMOVE_TASK = "DELETE FROM tasks WHERE id = ?"
KEY_FIELDS = ("task_id", "slot", "attempt")
CLAIM_FIELDS = (*KEY_FIELDS, "run", "name", "scheduled", "started", "status")
CLAIM_INDEX = tuple(RUN_FIELDS.index(name) for name in CLAIM_FIELDS)
CLAIM_RUN = (f"INSERT OR IGNORE INTO runs ({', '.join(CLAIM_FIELDS)}) "
              f"VALUES ({', '.join('?' * len(CLAIM_FIELDS))})")
RUN_KEY = tuple(RUN_FIELDS.index(name) for name in KEY_FIELDS)
SCHEDULED = RUN_FIELDS.index("scheduled")


def finish_sql(fields: Tuple[int, ...], where: str) -> str:
    sets = ", ".join(f"{RUN_FIELDS[i]} = COALESCE(?, {RUN_FIELDS[i]})"
                     if RUN_FIELDS[i] in CLAIMED_FIELDS else f"{RUN_FIELDS[i]} = ?"
                     for i in fields)
    return f"UPDATE runs SET {sets} WHERE task_id = ? AND slot = ? AND attempt = ?{where}"


# SQLite rewrites every index on a column that an UPDATE sets, changed or not,
# so finishing a claimed run sets ``scheduled`` only in the rare case that it
# moved: that keeps both time indexes out of the finishing commit.
FINISH_FIELDS = tuple(i for i, name in enumerate(RUN_FIELDS)
                       if name not in KEY_FIELDS and name != "scheduled")
FINISH_RUN = finish_sql(FINISH_FIELDS, " AND scheduled = ?")
MOVE_RUN = finish_sql((*FINISH_FIELDS, SCHEDULED), "")
INSERT_RUN = f"INSERT INTO runs ({RUN_COLUMNS}) VALUES ({', '.join('?' * len(RUN_FIELDS))})"
SET_ASIDE = (f"UPDATE runs SET slot = slot || '~' || COALESCE(run, 0) || '.' || attempt "
             f"WHERE task_id = ? AND (? = '' OR slot = ?) AND status IS NOT {RUNNING} "
             f"AND instr(slot, '~') = 0")
RELEASE_RUN = (f"DELETE FROM runs WHERE task_id = ? AND slot = ? AND attempt = ? "
                f"AND status = {RUNNING}")
MARK_INTERRUPTED = f"UPDATE runs SET status = {INTERRUPTED}, error = ? WHERE status = {RUNNING}"
NOTE_PROCESS = (f"UPDATE runs SET pid = ?, pid_started = ? WHERE task_id = ? AND slot = ? "
                f"AND attempt = ? AND status = {RUNNING}")
CLAIMED_PROCESSES = (f"SELECT {', '.join(PROCESS_FIELDS)} FROM runs "
                     f"WHERE status = {RUNNING} AND pid IS NOT NULL")
# (A stored task's latest claim is kept: a restart reads its claims. The
# latest is the last one made, whatever the wall clock said of the runs.)
PURGE_RUNS = (f"DELETE FROM runs WHERE status IS NOT {RUNNING} "
               f"AND COALESCE(finished, started, scheduled) < ? "
               f"AND id NOT IN (SELECT MAX(kept.id) FROM runs AS kept WHERE kept.status "
               f"IS NOT {MISSED} AND kept.task_id IN (SELECT id FROM tasks) "
               f"GROUP BY kept.task_id)")
PAUSED = TASK_FIELDS.index("paused")

# -- control requests (see controls.py; plain SQL that PostgreSQL runs too) ------
REQUEST_COLUMNS = "id, action, task_id, state, ok, message, requested, answered, requested_by"
REQUEST_CONTROL = ("INSERT INTO control_requests (action, task_id, state, requested, "
                   "requested_by) VALUES (?, ?, 'pending', ?, ?)")
# The poll's one cheap query: is there anything to take (or a taker's loss)?
ANY_REQUEST = ("SELECT 1 FROM control_requests WHERE state = 'pending' "
               "OR (state = 'taken' AND taken < ?) LIMIT 1")
ABANDON_REQUESTS = ("UPDATE control_requests SET state = 'failed', ok = 0, message = ?, "
                    "answered = ? WHERE state = 'taken' AND taken < ? AND action = 'run_now'")
RETAKE_REQUESTS = ("UPDATE control_requests SET state = 'pending', taken = NULL, "
                   "taken_by = NULL WHERE state = 'taken' AND taken < ?")
PENDING_REQUESTS = (f"SELECT {REQUEST_COLUMNS} FROM control_requests WHERE state = 'pending' "
                    f"ORDER BY id LIMIT ?")
TAKE_REQUEST = ("UPDATE control_requests SET state = 'taken', taken = ?, taken_by = ? "
                "WHERE id = ? AND state = 'pending'")
ANSWER_REQUEST = ("UPDATE control_requests SET state = ?, ok = ?, message = ?, answered = ? "
                  "WHERE id = ? AND state IN ('pending', 'taken')")
LOAD_REQUEST = f"SELECT {REQUEST_COLUMNS} FROM control_requests WHERE id = ?"
PURGE_REQUESTS = ("DELETE FROM control_requests WHERE state IN ('done', 'failed') "
                  "AND answered < ?")
