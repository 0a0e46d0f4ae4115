"""Send tasks to the service of remote_service.py and print the answers.

Start the service first, with the same PYSCHED_SECRET (see remote_service.py),
then: python examples/remote_client.py

The functions below travel to the service (by value: this file is __main__
there is no module to import them from), run there, and their results,
exceptions and tracebacks come back.
"""
import asyncio
import os
import sys
import time

from pysched_lightning.remote import Client


def main():
    secret = os.environ.get("PYSCHED_SECRET")
    if not secret:
        sys.exit("set PYSCHED_SECRET first (see remote_service.py)")
    with Client(name="example-client", service=os.environ.get("PYSCHED_SERVICE", "pysched"),
                broker=os.environ.get("PYSCHED_BROKER", "amqp://guest:guest@localhost:5672/%2F"),
                secret=secret, task_lifetime=10) as client:

        @client.task
        def add(a, b):
            return a + b

        @client.task
        def divide(a, b):
            return a / b

        @client.task
        def crunch(n):  # CPU work: in a process of its own on the service
            return os.getpid(), sum(i * i for i in range(n))

        @client.task
        def nap(seconds):
            time.sleep(seconds)
            return seconds

        crunch.set_parameters(hard=True, hard_task_lifetime=60)
        sent = {
            "add(2, 3)": add.launch(2, 3),
            "divide(1, 0)": divide.launch(1, 0),
            "crunch (a process)": crunch.launch(1_000_000),
            "nap(3), lifetime 1 s": nap.set_parameters(task_lifetime=1).launch(3),
            "add in 2 s": add.set_parameters(delay=2).launch(40, 2),
        }
        print(f"launched {len(sent)} tasks; each launch returned once the broker had it")
        for label, message_id in sent.items():
            response = client.sync_await_response(message_id, timeout=60)
            outcome = response.result if response.status == "completed" \
                else f"{type(response.exception).__name__}: {response.exception}"
            took = (response.finished - response.started).total_seconds() \
                if response.started else 0.0
            print(f"  {label:22} {response.status:9} {outcome}  ({took * 1000:.1f} ms)")
        print("the traceback of divide(1, 0), as the service saw it:")
        print("    " + client.get_response(sent["divide(1, 0)"]).traceback.strip()
              .splitlines()[-1])

        async def concurrently():
            ids = [add.set_parameters(delay=None).launch(i, i) for i in range(5)]
            return await asyncio.gather(*(client.async_get_response(i, timeout=30) for i in ids))

        print("awaited:", [r.result for r in asyncio.run(concurrently())])


if __name__ == "__main__":
    main()
