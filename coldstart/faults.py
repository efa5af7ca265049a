"""Fault injection for the kill-and-resume tests.

`COLDSTART_KILL_AT=<point>[@<n>]` makes the process SIGKILL itself the n-th time (default: the first) it reaches
`point`: a real, unannounced crash at a chosen phase. Unset, `reach` does nothing.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_reached: Counter[str] = Counter()


def reach(point: str) -> None:
    spec = os.environ.get("COLDSTART_KILL_AT")
    if not spec:
        return
    name, _, count = spec.partition("@")
    if name != point:
        return
    _reached[point] += 1
    if _reached[point] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
