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
  prints the line to stderr at exit, after uvicorn's own messages.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any, NoReturn

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
