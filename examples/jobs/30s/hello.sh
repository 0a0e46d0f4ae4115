#!/bin/sh
# Runs every 30 seconds: says hello, with the time and where it runs.
echo "hello from pysched at $(date '+%Y-%m-%d %H:%M:%S') in $(pwd)"
