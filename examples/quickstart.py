"""Quick start: a recurring task, a cron task, a one-shot and a hard task.

Runs for about 8 seconds, prints what ran, then shuts down by itself.
"""
import os
import time
from datetime import datetime

import pysched_lightning as psl


def tick(label):
    # datetime.now() reads the precise clock; time.strftime() reads a coarse
    # one that lags by a few ms, so a run due at 12:00:03 could print 12:00:02.
    print(f"{datetime.now():%H:%M:%S.%f}"[:-3] + f"  {label}", flush=True)


def crunch(n):
    """CPU work in a separate process (hard=True)."""
    return os.getpid(), sum(i * i for i in range(n))


def main():
    with psl.Scheduler(executor=psl.ThreadPoolExecutor(4)) as sched:
        sched.delay('recur', 2, 2, tick, args=("recur: every 2 s",))
        sched.delay('cron', '*/3 * * * * *', 1, tick, args=("cron: seconds divisible by 3",))
        once = sched.delay('once', 1, 1, tick, args=("once: 1 s after start",))
        hard = sched.delay('once', 0.5, 1, crunch, args=(2_000_000,), hard=True)

        pid, total = sched.get_result(hard, timeout=30)
        print(f"hard task ran in process {pid} (this one is {os.getpid()}): {total}")
        sched.get_result(once, timeout=10)
        time.sleep(7)
        for info in sched.get_all():
            print(f"{info['name']:<8} {info['trigger']:<6} runs={info['runs']:<2} "
                  f"status={info['status'].label}")
    print("scheduler shut down; bye")


if __name__ == "__main__":
    main()
