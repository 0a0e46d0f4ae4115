"""pysched_lightning: a priority scheduler for one-shot, recurring and cron tasks."""
from .decorator import task
from .execution.commands import (Command, CommandError, CommandResult, CommandTimeout,
                                 command)
from .execution.executors import ProcessPoolExecutor, ThreadPoolExecutor
from .execution.scripts import Script, script
from .records.context import RunContext, current_run
from .records.errors import StoreWriteError, WorkerCrashedError
from .records.events import Event, EventKind
from .records.options import LaneKind, TaskOptions
from .records.runs import Run, TaskStatus
from .records.task import Task
from .queries import LaneLoad
from .scheduler import Scheduler

__all__ = [
    "Scheduler", "task", "Task", "TaskOptions", "LaneKind", "ThreadPoolExecutor",
    "ProcessPoolExecutor", "TaskStatus", "Run", "Event", "EventKind", "RunContext",
    "current_run", "command", "script", "Command", "Script", "CommandResult",
    "CommandError", "CommandTimeout", "WorkerCrashedError", "StoreWriteError", "LaneLoad",
]
__version__ = "0.3.0"
