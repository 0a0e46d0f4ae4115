"""The jobs of the multi-node benchmark, importable by every node process.

Each execution appends one line to this node's own file (``O_APPEND``, one
``write`` per line, so lines never interleave): ``job_id node pid start end``
with ``time.time()`` stamps, which are comparable across the processes of one
machine. The benchmark reads the files to count executions, duplicates and
lost jobs, and to time them. The file and the node's name come from the
environment (``PSL_BENCH_OUT``, ``PSL_BENCH_NODE``) that the benchmark gives
each node process.
"""
import os
import time

_fd = None


def _line(text):
    global _fd
    if _fd is None:
        _fd = os.open(os.environ["PSL_BENCH_OUT"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_fd, text.encode())


def hit(job_id):
    """The no-op: record that *job_id* ran here."""
    start = time.time()
    _line(f"{job_id} {os.environ.get('PSL_BENCH_NODE', '?')} {os.getpid()} "
          f"{start:.6f} {time.time():.6f}\n")


def sleeper(job_id, seconds):
    """A long run: a line when it starts (end ``-``), another when it ends."""
    node, pid = os.environ.get("PSL_BENCH_NODE", "?"), os.getpid()
    start = time.time()
    _line(f"{job_id} {node} {pid} {start:.6f} -\n")
    time.sleep(seconds)
    _line(f"{job_id}:end {node} {pid} {start:.6f} {time.time():.6f}\n")
