"""pysched_lightning: a priority scheduler for one-shot, recurring and cron tasks."""
from .commands import Command, CommandError, CommandResult, CommandTimeout, command
from .context import RunContext, current_run
from .errors import StoreWriteError, WorkerCrashedError
from .events import Event, EventKind
from .executors import ProcessPoolExecutor, ThreadPoolExecutor
from .options import LaneKind, TaskOptions
from .runs import Run, TaskStatus
from .scheduler import Scheduler
from .scripts import Script, script
from .decorator import task
from .task import Task

__all__ = [
    "Scheduler", "task", "Task", "TaskOptions", "LaneKind", "ThreadPoolExecutor",
    "ProcessPoolExecutor", "TaskStatus", "Run", "Event", "EventKind", "RunContext",
    "current_run", "command", "script", "Command", "Script", "CommandResult",
    "CommandError", "CommandTimeout", "WorkerCrashedError", "StoreWriteError",
]
__version__ = "0.3.0"
