"""The Resource every signal carries."""

from __future__ import annotations

import os
import platform
import socket
import uuid
from importlib import metadata

from opentelemetry.sdk.resources import Resource

from ._settings import Settings

DISTRO_NAME = "otel-dist"


def distro_version() -> str:
    try:
        return metadata.version(DISTRO_NAME)
    except metadata.PackageNotFoundError:
        return "0+unknown"


def build_resource(settings: Settings) -> Resource:
    """service.*, deployment, host, process and distro attributes.

    ``service.instance.id`` is a fresh UUID per process, so each uvicorn or
    gunicorn worker is its own instance (the id is recomputed after a fork,
    see ``_bootstrap._after_fork``).
    """
    attributes: dict[str, str | int] = dict(settings.resource_attributes)
    attributes.update(
        {
            "service.name": settings.service_name,
            "service.version": settings.service_version,
            "service.instance.id": str(uuid.uuid4()),
            "host.name": socket.gethostname(),
            "host.arch": platform.machine(),
            "os.type": platform.system().lower(),
            "process.pid": os.getpid(),
            "process.runtime.name": platform.python_implementation().lower(),
            "process.runtime.version": platform.python_version(),
            "telemetry.sdk.language": "python",
            "telemetry.distro.name": DISTRO_NAME,
            "telemetry.distro.version": distro_version(),
        }
    )
    if settings.environment is not None:
        attributes["deployment.environment.name"] = settings.environment
    # Explicit OTEL_RESOURCE_ATTRIBUTES win over detected host/process values,
    # but never over the settings that name the service.
    for key, value in settings.resource_attributes:
        if key not in ("service.name", "service.version", "deployment.environment.name"):
            attributes[key] = value
    return Resource.create(attributes)
