import os
import time

import httpx
import pytest

from otel_dist import testing
from otel_dist.testing import capture_telemetry


@pytest.fixture
def telemetry():
    """A fresh otel-dist with in-memory exporters; the process environment is not read.

    Service auth is explicitly off (SERVICE_AUTH_ENABLED=false): these tests are about other
    things; the auth tests set up their own keys.
    """
    with capture_telemetry(service_name="test-svc", environment="test", auth_enabled=False) as cap:
        yield cap


def require(condition: bool, what: str) -> None:
    """Skip locally when a component is missing; under CI=true a missing component fails."""
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"missing in CI: {what}")
    pytest.skip(f"missing: {what}")


# ---- the secrets check across the whole suite (otel_dist/testing.py keeps the registry) ----


@pytest.fixture(scope="session", autouse=True)
def _http_exchanges_for_the_secrets_check():
    """Every credential the suite sends is a registered secret; every error body it receives is recorded."""
    sync_send, async_send = httpx.Client.send, httpx.AsyncClient.send

    def send(self, request, **kwargs):
        response = sync_send(self, request, **kwargs)
        testing.note_http_exchange(response)
        return response

    async def asend(self, request, **kwargs):
        response = await async_send(self, request, **kwargs)
        testing.note_http_exchange(response)
        return response

    httpx.Client.send, httpx.AsyncClient.send = send, asend
    yield
    httpx.Client.send, httpx.AsyncClient.send = sync_send, async_send


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if any registered secret (or a signed token) is in anything the suite captured."""
    started = time.perf_counter()
    leaks = testing.leaked_secrets()
    session.config.stash[_LEAKS] = leaks
    session.config.stash[_SCAN_SECONDS] = time.perf_counter() - started
    if leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    leaks = config.stash.get(_LEAKS, None)
    if leaks is None:
        return
    secrets, captures, chars = testing.secrets_check_stats()
    terminalreporter.section("secrets check")
    terminalreporter.line(
        f"{secrets} registered secrets and signed-token shapes searched in {captures} captures "
        f"({chars / 1e6:.1f} MB of log lines, spans, metric points, process output, error bodies) "
        f"in {config.stash.get(_SCAN_SECONDS, 0.0):.1f} s"
    )
    for leak in leaks[:50]:
        terminalreporter.line(f"LEAK {leak}", red=True)
    terminalreporter.line(f"{len(leaks)} leak(s)" if leaks else "no leak", red=bool(leaks), green=not leaks)


_LEAKS = pytest.StashKey[list]()
_SCAN_SECONDS = pytest.StashKey[float]()
