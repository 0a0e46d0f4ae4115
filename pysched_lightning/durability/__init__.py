"""What outlives the process: the stores, the encoding of tasks and runs
into their records, the journal that writes them, and the JSON run log.

It imports only ``records`` and ``timing``."""
