"""Config faults: every setting, given a wrong type or an out-of-range value, fails fast naming it.

The settings table is iterated, so a setting added later is covered without
editing this file.  Production mode refuses what is only safe on a laptop.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from typing import Any

import pytest

from otel_dist import ConfigError, load_settings
from otel_dist._settings import Settings, _lower_list, _optional_text, _regex_list, _text, _text_list
from otel_dist.testing import capture_telemetry, register_secret

from ._support import ROOT, clean_env

FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
SECRET = "s" * 40  # a valid service secret (>= 32 bytes)
register_secret(SECRET)

# Values of the wrong Python type for a typed keyword override (bootstrap(name=value)).
WRONG_TYPES: dict[str, list[Any]] = {
    "bool": [1, "maybe", 3 + 4j],
    "bool | None": [1, "maybe", 3 + 4j],
    "int": [2.5, True, "ten", [1], 3 + 4j],
    "int | None": [2.5, True, "ten", [1], 3 + 4j],
    "float": [True, "ten", [1.0], 3 + 4j],
    "str": [12345, b"bytes", ["a"], 3 + 4j],
    "str | None": [12345, b"bytes", 3 + 4j],
    "tuple": [42, [1, 2], [("k",)], 3 + 4j],
}
# Values no string setting may accept unless it is free text (a name, a path, a secret).
BAD_STRINGS = ["not a valid value!", "novalue", "ftp://host", "short", "maybe"]
FREE_TEXT_PARSERS = (_text, _optional_text, _text_list, _lower_list, _regex_list)


def kind(f: dataclasses.Field[Any]) -> str:
    return "tuple" if str(f.type).startswith("tuple") else str(f.type)


def env_name(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata["env"][0])


def refused(env: dict[str, str] | None = None, **overrides: Any) -> str:
    """The ConfigError message for these inputs ('' if they were accepted); outside production unless named."""
    try:
        load_settings({"ENVIRONMENT": "test", **(env or {})}, **overrides)
    except ConfigError as error:
        return str(error)
    return ""


def numeric_range(f: dataclasses.Field[Any]) -> tuple[float, float | None]:
    """(low, high) as the `accepts` text states it: 'x to y', or '> 0'."""
    accepts = f.metadata["accepts"]
    if m := re.search(r"(-?[\d.]+) to (-?[\d.]+)", accepts):
        return float(m.group(1)), float(m.group(2))
    assert "> 0" in accepts, f"{f.name}: numeric setting without a stated range: {accepts!r}"
    return 0.0, None


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_every_setting_refuses_a_wrong_type_and_names_itself(name):
    f = FIELDS[name]
    for value in WRONG_TYPES[kind(f)]:
        message = refused(**{name: value})
        assert message.startswith(f"{name}= argument: invalid value"), (name, value, message)
        assert f.metadata["accepts"] in message
        if f.metadata["secret"]:
            assert repr(value) not in message


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_every_setting_refuses_bad_environment_values_and_names_the_variable(name):
    f = FIELDS[name]
    variable = env_name(f)
    if kind(f) in ("int", "float"):
        low, high = numeric_range(f)
        step = 1 if kind(f) == "int" else 1e-6 * max(1.0, abs(low))
        bad = ["ten", "nan", "inf", "-inf", "-1000000000000", "1000000000000", repr(low - step)]
        bad += [repr(high + step)] if high is not None else []
        bad += ["1.5"] if kind(f) == "int" else []
        good = [repr(int(low) if kind(f) == "int" else low)] if low > 0 or high is not None else []
        good += [repr(int(high) if kind(f) == "int" else high)] if high is not None else []
    elif kind(f) == "bool":
        bad, good = ["maybe", "2", "yes please"], ["true", "false", "1", "0"]
    else:
        bad = [raw for raw in BAD_STRINGS if refused({variable: raw})]
        good = []
        if not bad:  # free text: any non-empty string is a legitimate value
            assert (
                f.metadata["parse"] in FREE_TEXT_PARSERS
                or name == "correlation_header"
                or "PEM" in str(f.metadata["accepts"])
            ), f"{name}: accepts every string; add a check or mark it as free text"
            return
    for raw in bad:
        message = refused({variable: raw})
        assert message.startswith(variable), (name, raw, message)
        if f.metadata["secret"]:
            assert repr(raw) not in message and ("<redacted>" in message or "too short" in message)
    # A bound stated as another setting ("at most OTEL_BSP_MAX_QUEUE_SIZE"): give that one room.
    companion = re.search(r"at most (OTEL_\w+)", f.metadata["accepts"])
    room = {companion.group(1): "1000000"} if companion else {}
    for raw in good:
        assert refused({variable: raw, **room}) == "", (name, raw)


def test_a_wrong_value_fails_bootstrap_too_before_anything_is_set_up():
    with pytest.raises(ConfigError, match=r"^OTEL_BSP_MAX_QUEUE_SIZE: invalid value '0'"):
        with capture_telemetry(env={"OTEL_BSP_MAX_QUEUE_SIZE": "0"}):
            pass
    with pytest.raises(ConfigError, match=r"^shutdown_timeout= argument: invalid value -1"):
        with capture_telemetry(shutdown_timeout=-1):
            pass


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SERVICE_JWT_SECRET": SECRET, "FAULT_INJECTION_ERROR_RATE": "0.1"}, "FAULT_INJECTION_ERROR_RATE"),
        ({"SERVICE_JWT_SECRET": SECRET, "FAULT_INJECTION_LATENCY_MS": "100"}, "FAULT_INJECTION_LATENCY_MS"),
        ({"SERVICE_JWT_SECRET": SECRET, "SERVICE_AUTH_ENABLED": "false"}, "SERVICE_AUTH_ENABLED"),
        ({"SERVICE_JWT_SECRET": "too-short"}, "SERVICE_JWT_SECRET"),
    ],
    ids=["fault-error-rate", "fault-latency", "auth-disabled", "short-secret"],
)
@pytest.mark.parametrize("environment", ["production", "prod", "Production", "prod-eu", "staging", "live"])
def test_production_refuses_insecure_settings(env, named, environment):
    message = refused({"ENVIRONMENT": environment, **env})
    assert named in message, message
    assert SECRET not in message and "too-short" not in message


def test_production_refuses_insecure_overrides_and_accepts_a_secure_configuration():
    assert "SERVICE_AUTH_ENABLED" in refused(
        {"SERVICE_JWT_SECRET": SECRET}, environment="production", auth_enabled=False
    )
    assert "FAULT_INJECTION" in refused(
        {"SERVICE_JWT_SECRET": SECRET, "ENVIRONMENT": "production"}, fault_error_rate=0.2
    )
    settings = load_settings({"ENVIRONMENT": "production", "SERVICE_JWT_SECRET": SECRET})
    assert settings.production and settings.auth_enabled and not settings.fault_error_rate


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "lots"}, "OTEL_BSP_MAX_QUEUE_SIZE"),
        (
            {"ENVIRONMENT": "production", "SERVICE_JWT_SECRET": SECRET, "SERVICE_AUTH_ENABLED": "0"},
            "SERVICE_AUTH_ENABLED",
        ),
        ({"ENVIRONMENT": "production"}, "SERVICE_JWT_SECRET"),
        ({"ENVIRONMENT": "staging", "SERVICE_AUTH_ENABLED": "false"}, "SERVICE_AUTH_ENABLED"),
        ({}, "SERVICE_JWT_SECRET"),  # unset ENVIRONMENT: production rules, and auth needs a key anywhere
        ({"ENVIRONMENT": "production", "SERVICE_JWT_ALGORITHM": "EdDSA"}, "SERVICE_JWT_PRIVATE_KEY"),
    ],
    ids=["bad-number", "production-auth-off", "production-no-secret", "staging-auth-off", "unset-no-secret", "eddsa"],
)
@pytest.mark.parametrize("app", ["tests.reliability.apps.svc:app", "services.gateway.app:app"])
def test_a_server_process_with_a_config_fault_exits_at_once_naming_it(env, named, app):
    argv = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", "0"]
    run = subprocess.run(argv, env=clean_env(**env), cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert f"ConfigError: {named}" in output, output[-2000:]
    assert SECRET not in output
