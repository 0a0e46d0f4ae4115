"""A task service for remote clients, over RabbitMQ (see remote_client.py).

It needs the 'remote' extra, RabbitMQ on localhost (guest/guest) and a
shared secret, the same for the service and its clients:

    pip install -e '.[remote]'
    export PYSCHED_SECRET=$(python -c "import secrets; print(secrets.token_hex(32))")
    python examples/remote_service.py        # runs until Ctrl-C
    python examples/remote_client.py         # in another shell, same PYSCHED_SECRET

It keeps what it accepts in ./service.db, so a restart loses nothing.
PYSCHED_BROKER and PYSCHED_SERVICE change the broker URL and the service's
name. The command line does the same: ``pysched serve --broker URL --store
service.db``.
"""
import logging
import os
import sys

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
    try:
        service.start()  # blocks; Ctrl-C stops it cleanly
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
