"""A task service for remote clients, over RabbitMQ (see remote_client.py).

It needs the 'remote' extra, RabbitMQ on localhost (guest/guest) and a
shared secret, the same for the service and its clients:

    pip install -e '.[remote]'
    export PYSCHED_SECRET=$(python -c "import secrets; print(secrets.token_hex(32))")
    python examples/remote_service.py        # runs until Ctrl-C or SIGTERM
    python examples/remote_client.py         # in another shell, same PYSCHED_SECRET

It keeps what it accepts in ./service.db, so a restart loses nothing.
PYSCHED_BROKER and PYSCHED_SERVICE change the broker URL and the service's
name. The command line does the same: ``pysched serve --broker URL --store
service.db``.
"""
import logging
import os
import signal
import sys
import threading

from pysched_lightning.remote import Service


def main():
    secret = os.environ.get("PYSCHED_SECRET")
    if not secret:
        sys.exit("set PYSCHED_SECRET first (see the top of this file)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("pika").setLevel(logging.CRITICAL)  # the service logs what matters
    service = Service(name=os.environ.get("PYSCHED_SERVICE", "pysched"),
                      broker=os.environ.get("PYSCHED_BROKER",
                                            "amqp://guest:guest@localhost:5672/%2F"),
                      store="sqlite:///service.db", secret=secret)
    # Ctrl-C, and SIGTERM from `kill` or a service manager, stop it cleanly:
    # running tasks get 30 s to finish, then they are answered "timeout" (a
    # hard task's process is killed), and the answers go out before it exits.
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    service.start(block=False)
    while not stop.wait(1.0):
        if not service.running:  # it stopped itself (its log says why)
            sys.exit(1)
    service.stop(timeout=30)


if __name__ == "__main__":
    main()
