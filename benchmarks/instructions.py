#!/usr/bin/env python
"""Instructions per run, counted by valgrind's callgrind rather than timed.

A count is repeatable on a shared, noisy machine where a time is not. The
script runs itself under valgrind twice per workload, with n operations and
with none, and divides the difference by n:

    python benchmarks/instructions.py              # thread tasks and delay() of a task an hour away
    python benchmarks/instructions.py --runs 4000 --repeat 5
    python benchmarks/instructions.py --against ../old-checkout   # the same, beside another copy

A count still moves by a percent or two from one measurement to the next
(the threads interleave differently, and a busy lock is waited for with a
few yields): ``--repeat`` takes several, and the median is the figure.

Workloads: ``thread-task`` is ``delay()`` of a no-op due now on the default
thread pool, up to its end; ``delay-later`` is ``delay()`` of a task an hour
away. Needs valgrind (``apt-get install valgrind``).
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.append(str(HERE.parent))


def _noop() -> None:
    pass


def _thread_tasks(n: int) -> None:
    import pysched_lightning as psl
    done = threading.Event()
    count = [0]
    lock = threading.Lock()

    def counted() -> None:
        with lock:
            count[0] += 1
            if count[0] == n:
                done.set()

    sched = psl.Scheduler()
    sched.start()
    sched.delay('once', 0, 1, _noop)  # warm up: threads made, first-use paths taken
    sched.get_result(sched.delay('once', 0, 1, _noop), timeout=60)
    for _ in range(n):
        sched.delay('once', 0, 1, counted)
    if n:
        done.wait(600)
    sched.shutdown(wait=True)


def _delay_later(n: int) -> None:
    import pysched_lightning as psl
    sched = psl.Scheduler()
    sched.start()
    sched.delay('once', 3600, 1, _noop)  # warm up
    for _ in range(n):
        sched.delay('once', 3600, 1, _noop)
    sched.shutdown(wait=True)


WORKLOADS = {"thread-task": _thread_tasks, "delay-later": _delay_later}


def _count(workload: str, n: int, root: str) -> int:
    """Instructions of the whole process running *workload* n times, with
    the package of the checkout at *root*."""
    env = dict(os.environ, PYTHONPATH=root)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                        sys.executable, __file__, "--inner", workload, str(n)], cwd=root,
                       env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        text = Path(out).read_text(errors="replace")
    match = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.MULTILINE)
    if match is None:
        raise RuntimeError("callgrind wrote no total")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inner", nargs=2, metavar=("WORKLOAD", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=2000, help="operations per measurement")
    parser.add_argument("--only", default=",".join(WORKLOADS), help="workloads, comma separated")
    parser.add_argument("--repeat", type=int, default=1, help="measurements of each (median)")
    parser.add_argument("--against", help="another checkout, measured in turns with this one")
    args = parser.parse_args()
    if args.inner:
        WORKLOADS[args.inner[0]](int(args.inner[1]))
        return
    roots = {"this": str(HERE.parent)}
    if args.against:
        roots["against"] = os.path.abspath(args.against)
    for workload in args.only.split(","):
        counts: dict = {name: [] for name in roots}
        for _ in range(args.repeat):
            for name, root in roots.items():  # in turns
                base = _count(workload, 0, root)
                counts[name].append((_count(workload, args.runs, root) - base) / args.runs)
        for name, each in counts.items():
            label = f"{workload} ({name})" if args.against else workload
            print(f"{label:24s} {statistics.median(each):>10,.0f} instructions each "
                  f"(median of {len(each)}: {', '.join(f'{c:,.0f}' for c in each)}; "
                  f"{args.runs} runs)", flush=True)


if __name__ == "__main__":
    main()
