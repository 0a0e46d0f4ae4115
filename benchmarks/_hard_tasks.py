"""What the hard-task row sends to worker processes.

Workers import these by reference (``_hard_tasks:noop``), so every contender
pickles the same few bytes per task and none pays for pickling a function
by value.
"""
import os
import time


def noop():
    pass


def meet(folder, count):
    """Return once *count* workers are in this call together, so that *count*
    such calls on *count* workers prove every worker process is up."""
    with open(os.path.join(folder, str(os.getpid())), "w"):
        pass
    deadline = time.monotonic() + 120
    while len(os.listdir(folder)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(os.listdir(folder))} of {count} workers came")
        time.sleep(0.002)
