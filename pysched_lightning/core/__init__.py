"""The scheduler's core: the state lock and what it guards (timetable, run
book, lanes, deadlines), the run's state machine, firing, control, the
dispatcher loop, and loading a store's tasks.

It calls no user code under its lock and imports only ``durability``,
``records`` and ``timing``; the execution layer is handed in."""
