"""A ConfigError at startup ends the process with one plain last line on stderr.

``ConfigError: VARIABLE: what is wrong; accepted: ...`` and a non-zero exit, on
every launch path:

- bootstrap or ``instrument_app`` at import (plain ``uvicorn pkg.app:app``): the
  error is uncaught, and the excepthook installed when the first ConfigError is
  created prints the line instead of a traceback (exit status 1);
- ``opentelemetry-instrument``: upstream logs and swallows configurator errors and
  the app would serve with no telemetry; :func:`exit_now` stops it instead;
- a FastAPI lifespan: uvicorn catches the error, logs it (to our JSON lines on
  stdout, or stderr under the wrapper) and exits with status 3; :func:`wrap_lifespan`
  prints the line to stderr at exit, after uvicorn's own messages;
- ``uvicorn --workers N`` at import: a worker's uncaught error would print a traceback
  and the supervisor would restart it forever; :func:`worker_exit` prints the line and
  exits the worker with uvicorn's STARTUP_FAILURE (3), on which the supervisor stops
  (uvicorn's parent then exits 0 after its own "stopping" lines: its choice, not ours).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager
from functools import wraps
from typing import Any, NoReturn, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")
STARTUP_FAILURE = 3  # uvicorn's (and gunicorn's boot-error) exit status: the supervisor stops, no restart

_installed = False
_lock = threading.Lock()


def line(error: BaseException) -> str:
    return f"ConfigError: {error}"


def _config_error_in(error: BaseException | None) -> BaseException | None:
    from ._settings import ConfigError

    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, ConfigError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def install_excepthook() -> None:
    """Render an uncaught ConfigError as its one line; every other exception as before."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
        previous = sys.excepthook

        def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
            found = _config_error_in(value)
            if found is None:
                previous(kind, value, tb)
                return
            _write(line(found))

        sys.excepthook = hook


def _write(text: str) -> None:
    try:
        sys.stdout.flush()
    except Exception:  # noqa: BLE001 - a closed stdout must not hide the error line
        pass
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


_at_exit: list[str] = []


def _report_at_exit(text: str) -> None:
    """uvicorn logs the failure and exits (status 3) after the lifespan; the line must come last."""
    if not _at_exit:
        atexit.register(lambda: _write(_at_exit[-1]))
    _at_exit.append(text)


def exit_now(error: BaseException) -> NoReturn:
    """Print the line and end the process (the wrapper's sitecustomize: nothing is set up yet)."""
    _write(line(error))
    os._exit(1)


def _in_uvicorn_worker() -> bool:
    import multiprocessing

    return multiprocessing.parent_process() is not None and "uvicorn.supervisors.multiprocess" in sys.modules


def worker_exit(entry_point: Callable[P, R]) -> Callable[P, R]:
    """In a ``uvicorn --workers`` child, a ConfigError from `entry_point` ends the worker with the line and
    status 3 (so the supervisor stops instead of restarting it forever); elsewhere it propagates unchanged."""

    @wraps(entry_point)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return entry_point(*args, **kwargs)
        except Exception as error:
            found = _config_error_in(error)
            if found is None or not _in_uvicorn_worker():
                raise
            _write(line(found))
            raise SystemExit(STARTUP_FAILURE) from None

    return guarded


def wrap_lifespan(lifespan: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The app's lifespan, printing the line if it fails with a ConfigError (uvicorn then exits)."""
    if getattr(lifespan, "_otel_dist_reports", False):
        return lifespan

    @asynccontextmanager
    async def reporting(app: Any) -> Any:
        try:
            async with lifespan(app) as state:
                yield state
        except BaseException as error:
            found = _config_error_in(error)
            if found is not None:
                _report_at_exit(line(found))
            raise

    reporting._otel_dist_reports = True  # type: ignore[attr-defined]
    return reporting
