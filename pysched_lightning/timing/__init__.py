"""Time: triggers (once, recur, cron), cron expressions and their DST rule,
time zones, and the scheduler's two clocks.

Beside ``records`` at the bottom: it imports nothing else of the package."""
