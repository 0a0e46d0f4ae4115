#!/bin/sh
# Runs at the top of every hour (cron alias @hourly): the load average.
if [ -r /proc/loadavg ]; then
    echo "load average: $(cut -d ' ' -f 1-3 /proc/loadavg)"
else
    uptime
fi
