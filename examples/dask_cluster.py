"""Scheduled tasks on a dask cluster.

    pip install '.[dask]'
    python examples/dask_cluster.py                    # a LocalCluster of 2 worker processes here
    python examples/dask_cluster.py tcp://host:8786    # or a running dask scheduler

A recurring task, an urgent one-shot and a failing task run on the workers;
the main process prints what came back, and exits after about 3 seconds.
The failed run is also logged, with the worker's traceback, through the
"pysched_lightning" logger (on stderr, as this script configures no logging).
"""
import logging
import os
import sys
import time

import pysched_lightning as psl
from pysched_lightning.contrib.dask import DaskExecutor


def where(label):
    """Functions of __main__ travel to the workers by value (cloudpickle)."""
    return f"{label} ran on worker process {os.getpid()}"


def crunch(n):
    return f"crunch({n:,}) = {sum(i * i for i in range(n)):,} ran on worker process {os.getpid()}"


def read_config(path):
    with open(path) as config:  # raises on the worker; the traceback comes back
        return config.read()


def report(event):
    """A listener: runs in this process when a run's outcome arrives."""
    print(f"{time.strftime('%H:%M:%S')}  {event.result}", flush=True)


def run(executor):
    with psl.Scheduler(executor=executor) as sched:
        sched.add_listener(report, kinds=[psl.EventKind.COMPLETED])
        sched.delay('recur', 1, 5, where, args=("recur: every second",), task_id="where")
        sched.delay('once', 0.5, 1, crunch, args=(3_000_000,),  # priority 1: ahead of the rest
                    task_id="crunch")
        failing = sched.delay('once', 0, 3, read_config, args=("/nonexistent/app.ini",),
                              task_id="read-config")
        try:
            sched.get_result(failing, timeout=30)
        except FileNotFoundError as exc:
            traceback = sched.result[failing].traceback
            frame = next(line for line in traceback.splitlines() if "in read_config" in line)
            print(f"read_config failed on the cluster: {exc}\n  at{frame.split(',', 1)[1]}",
                  flush=True)
        time.sleep(2.5)
    # Leaving the with block shut the scheduler down, and with it the DaskExecutor.


def main():
    if len(sys.argv) > 1:  # a running cluster: the executor makes a client and closes it
        run(DaskExecutor(sys.argv[1]))
    else:
        from distributed import LocalCluster

        # The dashboard on a free loopback port; silence_logs keeps dask's own
        # report of the failing task quiet (the scheduler logs it, see below).
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address="127.0.0.1:0",
                          silence_logs=logging.CRITICAL) as cluster:
            run(DaskExecutor(cluster))
    print("scheduler and cluster shut down; bye")


if __name__ == "__main__":  # worker processes start by importing this file
    main()
