"""The ``pysched`` command: run a folder of job scripts, PyCron style.

::

    pysched run [-c CONFIG] [-t JOBS_DIR] [-l LOGS_DIR] [-s STORE] [--nuke]
                [--grace SECONDS] [--workers N] [--status] [--log-level LEVEL]
    pysched list [-c CONFIG] [-t JOBS_DIR] [-s STORE] [--json]
    pysched history [JOB] [-n N] [-c CONFIG] [-t JOBS_DIR] [-s STORE] [--json]

(also ``python -m pysched_lightning ...``; ``pysched -c CONFIG ...``, with
options but no command, means ``pysched run ...``, as ``pycron -c`` did).
``pysched dashboard`` and ``pysched serve`` come with their extras.

The parts: :mod:`.jobs` (the folder and its schedules), :mod:`.runner`
(``run``), :mod:`.reporting` (what ``run`` logs), :mod:`.status` (``run
--status``), :mod:`.views` (``list``, ``history``), :mod:`.main` (the parser).

``run`` keeps tasks and runs in the SQLite store PERSISTENCE_FILE and writes
one JSON line per finished run to ``<logs>/job_status.log`` (rotated at UTC
midnight, 30 days kept). ``--nuke`` clears the store before the scheduler
opens it. A second ``pysched run`` on a store in use refuses to start.
SIGINT or SIGTERM stops it: no new runs start, running jobs get ``--grace``
seconds (default 10) to finish, then their process groups are killed; the
state is saved and the exit code is 0.

Exit codes: 0 success, 2 usage or configuration error, 1 any other failure.
"""
from .common import CommandFailed, UsageError
from .jobs import (FolderSchedule, Job, describe_schedule, parse_folder_name,
                   parse_schedule_file, retry_policy, scan_jobs)
from .main import build_parser, main
from .reporting import LibraryRecords, RunReporter, setup_logging

__all__ = ["main", "build_parser", "FolderSchedule", "Job", "parse_folder_name",
           "parse_schedule_file", "scan_jobs", "retry_policy", "describe_schedule",
           "RunReporter", "LibraryRecords", "setup_logging", "UsageError", "CommandFailed"]
