"""The Resource every signal carries.

Precedence, lowest first: otel-dist's detected host/process attributes <
``OTEL_EXPERIMENTAL_RESOURCE_DETECTORS`` < ``OTEL_RESOURCE_ATTRIBUTES`` < the
specific settings (``OTEL_SERVICE_NAME``, ``SERVICE_VERSION``, ``ENVIRONMENT``)
< keyword arguments.  The last three are resolved in ``_settings``; here the
Resource is assembled without the SDK's own environment detectors, so the
settings table is the only place the environment is read.
"""

from __future__ import annotations

import os
import platform
import socket
import uuid
from importlib import metadata

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.version import __version__ as sdk_version

from ._settings import ConfigError, Settings

DISTRO_NAME = "otel-dist"
# "otel" reads OTEL_RESOURCE_ATTRIBUTES/OTEL_SERVICE_NAME behind the settings table's back: the
# table already applies them, so naming it is accepted and changes nothing.
_BUILT_IN = frozenset(("otel",))


def distro_version() -> str:
    try:
        return metadata.version(DISTRO_NAME)
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _detected(names: tuple[str, ...]) -> dict[str, object]:
    """Attributes from the named `opentelemetry_resource_detector` entry points."""
    wanted = [n for n in names if n not in _BUILT_IN]
    if not wanted:
        return {}
    installed = {ep.name: ep for ep in metadata.entry_points(group="opentelemetry_resource_detector")}
    missing = [n for n in wanted if n not in installed]
    if missing:
        raise ConfigError(
            f"OTEL_EXPERIMENTAL_RESOURCE_DETECTORS: {', '.join(missing)} not installed; "
            f"accepted: {', '.join(sorted(installed))}"
        )
    attributes: dict[str, object] = {}
    for name in wanted:
        try:
            attributes.update(installed[name].load()().detect().attributes)
        except Exception as exc:  # noqa: BLE001 - a detector failing (no container, no cloud) is not fatal
            import logging

            logging.getLogger("otel_dist").warning("resource detector %s failed: %s", name, exc)
    return attributes


def build_resource(settings: Settings) -> Resource:
    """service.*, deployment, host, process and distro attributes.

    ``service.instance.id`` is a fresh UUID per process, so each uvicorn or
    gunicorn worker is its own instance.
    """
    attributes: dict[str, object] = {
        "service.instance.id": str(uuid.uuid4()),
        "host.name": socket.gethostname(),
        "host.arch": platform.machine(),
        "os.type": platform.system().lower(),
        "process.pid": os.getpid(),
        "process.runtime.name": platform.python_implementation().lower(),
        "process.runtime.version": platform.python_version(),
    }
    attributes.update(_detected(settings.resource_detectors))
    attributes.update(settings.resource_attributes)
    attributes.update(
        {
            "service.name": settings.service_name,
            "service.version": settings.service_version,
            "telemetry.sdk.language": "python",
            "telemetry.sdk.name": "opentelemetry",
            "telemetry.sdk.version": sdk_version,
            "telemetry.distro.name": DISTRO_NAME,
            "telemetry.distro.version": distro_version(),
        }
    )
    if settings.environment is not None:  # unset: no attribute (and the production rules apply)
        attributes["deployment.environment.name"] = settings.environment
    return Resource(attributes)  # type: ignore[arg-type]
