#!/bin/sh
# Fails on purpose every other run, so the re-run after
# JOB_FAIL_TIMEOUT_PERIOD_MINUTES shows in job_status.log and `pysched history`:
# the first attempt fails, the re-run succeeds.
# A failed job is re-run only when the fail period is shorter than its folder's
# interval, so run pysched with JOB_FAIL_TIMEOUT_PERIOD_MINUTES = 0.25 (15 s),
# as examples/demo.ini does, to see the re-run; with the default 5 minutes the
# next 1-minute slot comes first.
#
# The marker is per `pysched run` session: pysched runs each job as its own
# child, so $PPID is the session's process id. A new session starts with a
# failing attempt again, whatever an earlier session left behind; markers of
# sessions that are gone are removed.
dir="${TMPDIR:-/tmp}"
for old in "$dir"/pysched-example-flaky."$(id -u)".*; do
    [ -e "$old" ] || continue
    kill -0 "${old##*.}" 2>/dev/null || rm -f "$old"
done
marker="$dir/pysched-example-flaky.$(id -u).$PPID"
if [ -e "$marker" ]; then
    rm -f "$marker"
    echo "flaky: second attempt, succeeding"
    exit 0
fi
: > "$marker"
echo "flaky: first attempt, failing on purpose" >&2
exit 1
