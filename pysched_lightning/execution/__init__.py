"""Where runs execute: thread workers, the hand-off to process pools and
other executors, coroutines on the event loop, killable processes, and the
command and script tasks.

It imports ``core`` and the layers below it, never the facade."""
