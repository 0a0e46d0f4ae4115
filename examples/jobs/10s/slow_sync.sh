#!/bin/sh
# Runs every 10 seconds but takes 25: while it runs, its next slots are
# skipped, not queued. `pysched list` shows it Running, and `pysched history`
# shows one Missed record with a count ("skipped 2 times: previous run still
# going") between two runs.
echo "sync started"
sleep 25
echo "sync done"
