"""The PostgreSQL inbox's tables and statements (pg_inbox.py runs them).

Two tables: ``remote_services``, one registration (owner + epoch) per
running instance with its lease; ``remote_messages``, the rows of the
SQLite inbox's states keyed by (service name, message id), each naming the
registration that owns it. Every statement that writes a row is fenced
with :data:`MINE`: it changes a row only while the row is this instance's
under a registration nobody took.
"""
from __future__ import annotations

__all__ = ["SCHEMA_LOCK", "ADOPT_LOCK_CLASS", "SCHEMA", "LOCK_SCHEMA", "MINE", "ROW",
           "REGISTERED_FOR_SHARE", "ACCEPT", "START", "DONE", "PUBLISHED", "UNFINISHED",
           "RUNNABLE", "COLUMN", "TAKEN", "TRY_ADOPT_LOCK", "REGISTERED", "DELETE_LAPSED",
           "ADOPT", "RENEW", "REGISTER", "DEREGISTER"]

#: Advisory lock keys (class, key): creating the tables; adopting for a name.
SCHEMA_LOCK = (0x70737201, 0)
ADOPT_LOCK_CLASS = 0x70737202

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS remote_services (
        owner       TEXT NOT NULL,
        epoch       BIGINT NOT NULL,
        name        TEXT NOT NULL,
        host        TEXT NOT NULL,
        pid         INTEGER NOT NULL,
        registered  TIMESTAMPTZ NOT NULL DEFAULT now(),
        lease_until TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (owner, epoch))""",
    "CREATE SEQUENCE IF NOT EXISTS remote_service_epochs",
    """CREATE TABLE IF NOT EXISTS remote_messages (
        name       TEXT NOT NULL,
        message_id TEXT NOT NULL,
        client     TEXT NOT NULL,
        state      TEXT NOT NULL
                   CHECK (state IN ('accepted', 'started', 'done', 'published')),
        due        DOUBLE PRECISION NOT NULL,
        received   DOUBLE PRECISION NOT NULL,
        started    DOUBLE PRECISION,
        body       BYTEA,
        response   BYTEA,
        owner      TEXT NOT NULL,
        epoch      BIGINT NOT NULL,
        seq        BIGINT GENERATED ALWAYS AS IDENTITY,  -- the order of arrival
        PRIMARY KEY (name, message_id))""",
    """CREATE INDEX IF NOT EXISTS remote_messages_open
        ON remote_messages (name, owner, epoch) WHERE state <> 'published'""",
)
#: Taken while the tables are made, so instances starting together wait.
LOCK_SCHEMA = "SELECT pg_advisory_xact_lock(%s, %s)"

# ------------------------------------------------------------- the messages

#: The row is this instance's, under a registration nobody took (fencing).
MINE = ("m.owner = %(owner)s AND EXISTS (SELECT 1 FROM remote_services s "
        "WHERE s.owner = m.owner AND s.epoch = m.epoch)")
#: The columns of a row as pg_inbox's reader takes them.
ROW = "m.message_id, m.client, m.state, m.due, m.started, m.body, m.response, m.seq"

#: This instance's registration, locked shared: an adoption (which deletes
#: it) waits for the transaction that holds it.
REGISTERED_FOR_SHARE = ("SELECT 1 FROM remote_services WHERE owner = %s AND epoch = %s "
                        "FOR SHARE")
#: Store a batch in arrival order; returns the ids that were new to the name.
ACCEPT = ("INSERT INTO remote_messages (name, message_id, client, state, due, received,"
          " body, response, owner, epoch) "
          "SELECT %(name)s, i.id, i.client, i.state, i.due, %(now)s, i.body, i.response,"
          " %(owner)s, %(epoch)s "
          "FROM unnest(%(ids)s::text[], %(clients)s::text[], %(states)s::text[],"
          " %(dues)s::float8[], %(bodies)s::bytea[], %(responses)s::bytea[]) "
          " WITH ORDINALITY AS i(id, client, state, due, body, response, n) ORDER BY i.n "
          "ON CONFLICT (name, message_id) DO NOTHING RETURNING message_id")
START = ("UPDATE remote_messages m SET state = 'started', started = %(started)s "
         "WHERE m.name = %(name)s AND m.message_id = %(id)s AND m.state = 'accepted' AND "
         + MINE + " RETURNING m.body")
DONE = ("UPDATE remote_messages m SET state = 'done', response = o.response "
        "FROM unnest(%(ids)s::text[], %(responses)s::bytea[]) AS o(id, response) "
        "WHERE m.name = %(name)s AND m.message_id = o.id "
        "AND m.state IN ('accepted', 'started') AND " + MINE + " RETURNING m.message_id")
PUBLISHED = ("UPDATE remote_messages m SET state = 'published', body = NULL, response = NULL "
             "WHERE m.name = %(name)s AND m.message_id = ANY(%(ids)s) AND m.state = 'done' "
             "AND " + MINE)
UNFINISHED = (f"SELECT {ROW} FROM remote_messages m WHERE m.name = %s "
              "AND m.state <> 'published' ORDER BY m.seq")
RUNNABLE = (f"SELECT {ROW} FROM remote_messages m WHERE m.name = %(name)s "
            "AND m.message_id = %(id)s AND m.state = 'accepted' AND " + MINE)
#: One column of a row, whoever owns it: ``COLUMN.format(column)``.
COLUMN = "SELECT {} FROM remote_messages WHERE name = %s AND message_id = %s"
#: Which of some rows another instance owns now.
TAKEN = ("SELECT message_id FROM remote_messages m WHERE m.name = %(name)s "
         "AND m.message_id = ANY(%(ids)s) AND NOT (" + MINE + ")")

# ------------------------------------------------------------- the lease

#: One instance of a name adopts at a time; the others skip the round.
TRY_ADOPT_LOCK = "SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))"
REGISTERED = "SELECT 1 FROM remote_services WHERE owner = %(owner)s AND epoch = %(epoch)s"
DELETE_LAPSED = ("DELETE FROM remote_services WHERE name = %(name)s AND lease_until < now() "
                 "AND NOT (owner = %(owner)s AND epoch = %(epoch)s) RETURNING owner")
#: Take the rows whose registration is gone (lapsed, or deleted at a clean stop).
ADOPT = ("UPDATE remote_messages m SET owner = %(owner)s, epoch = %(epoch)s "
         "WHERE m.name = %(name)s AND m.state <> 'published' AND NOT EXISTS "
         "(SELECT 1 FROM remote_services s WHERE s.owner = m.owner AND "
         f"s.epoch = m.epoch) RETURNING {ROW}")
#: Extend the lease; returns how late that was (seconds, > 0 once it had
#: lapsed), or nothing when the registration was taken over.
RENEW = ("UPDATE remote_services s SET lease_until = now() + make_interval(secs => "
         "%(lease)s) FROM (SELECT lease_until FROM remote_services WHERE owner = "
         "%(owner)s AND epoch = %(epoch)s FOR UPDATE) AS old WHERE s.owner = %(owner)s "
         "AND s.epoch = %(epoch)s "
         "RETURNING extract(epoch FROM now() - old.lease_until)::float8")
#: A new registration (a new epoch) with a fresh lease.
REGISTER = ("INSERT INTO remote_services (owner, epoch, name, host, pid, lease_until) "
            "VALUES (%s, nextval('remote_service_epochs'), %s, %s, %s, "
            "now() + make_interval(secs => %s)) RETURNING epoch")
DEREGISTER = "DELETE FROM remote_services WHERE owner = %s AND epoch = %s"
