#!/bin/sh
# Runs on the cron schedule in ./schedule: a tiny report of this folder.
echo "report at $(date '+%H:%M'): $(ls | wc -l) file(s) in $(basename "$(pwd)")"
