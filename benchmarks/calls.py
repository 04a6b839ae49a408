"""Function calls counted with ``sys.setprofile``: the same on any machine for given library versions."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def counting_calls() -> Iterator[list[int]]:
    """Python and C function calls on this thread while the block runs, in ``counted[0]`` (a resumed
    coroutine counts again)."""
    counted = [0]

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" or event == "c_call":
            counted[0] += 1

    sys.setprofile(profile)
    try:
        yield counted
    finally:
        sys.setprofile(None)
