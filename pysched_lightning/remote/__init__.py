"""Client and service over RabbitMQ (the ``remote`` extra: ``pip install
'.[remote]'`` in the project's folder).

Programs hand tasks to one scheduling service and get the answers back::

    from pysched_lightning.remote import Client, Service

    # in the service's process (or: pysched serve --broker URL --store service.db)
    Service(name="pysched", broker=URL, store="sqlite:///service.db", secret=KEY).start()

    # in any number of client processes
    with Client(name="web-1", service="pysched", broker=URL, secret=KEY) as client:
        @client.task
        def add(a, b):
            return a + b
        message_id = add.launch(1, 2)  # returns once the broker has it
        print(client.sync_await_response(message_id, timeout=10).result)

The broker client (pika) is imported only when ``Client`` or ``Service`` is
first used, so the rest of the library works without the extra.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .messages import STATUSES, RemoteError, Request, Response
from .protocol import DEFAULT_MAX_MESSAGE_SIZE, PROTOCOL_VERSION, RejectedMessage

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client, LaunchError, LaunchTimeout
    from .service import Service
    from .tasks import RemoteTask

__all__ = ["Client", "Service", "Request", "Response", "RemoteTask", "RemoteError",
           "LaunchError", "LaunchTimeout", "RejectedMessage", "STATUSES", "PROTOCOL_VERSION",
           "DEFAULT_MAX_MESSAGE_SIZE", "DEFAULT_BROKER"]

_LAZY = {"Client": "client", "LaunchError": "client", "LaunchTimeout": "client",
         "Service": "service",
         "RemoteTask": "tasks", "DEFAULT_BROKER": "broker"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module
    try:
        value = getattr(import_module(f"{__name__}.{module}"), name)
    except ImportError as exc:
        if exc.name == "pika":
            from ..records.errors import install_hint
            raise ImportError(f"pysched_lightning.remote needs pika: "
                              f"{install_hint('remote')}") from exc
        raise
    globals()[name] = value
    return value
