import pytest

from otel_dist import ConfigError, load_settings
from otel_dist._settings import settings_table


def test_defaults_follow_the_seed_and_the_spec():
    s = load_settings({})
    assert s.service_name == "unknown_service"
    assert s.environment is None and s.production  # fail closed: unset is production
    assert s.non_production_environments == ("development", "dev", "local", "test", "demo")
    assert s.log_level == "INFO"
    assert s.traces_sampler == "parentbased_always_on"
    assert s.client_max_retries == 3 and s.client_retry_backoff == 2.0 and s.client_timeout == 30.0
    assert (s.breaker_failure_threshold, s.breaker_success_threshold, s.breaker_timeout) == (5, 2, 60.0)
    # Embedded default: no collector, so metrics are pulled and nothing is pushed.
    assert s.trace_exporters == () and s.log_exporters == () and s.metric_exporters == ("prometheus",)


def test_an_otlp_endpoint_turns_on_push_for_all_signals():
    s = load_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318/", "ENVIRONMENT": "test"})
    assert s.otlp_endpoint == "http://127.0.0.1:4318"
    assert s.trace_exporters == ("otlp",) and s.log_exporters == ("otlp",)
    assert s.metric_exporters == ("prometheus", "otlp")


def test_keyword_override_wins_over_environment():
    s = load_settings(
        {"OTEL_SERVICE_NAME": "from-env", "LOG_LEVEL": "DEBUG", "ENVIRONMENT": "test"}, service_name="from-arg"
    )
    assert s.service_name == "from-arg" and s.log_level == "DEBUG"


def test_string_overrides_are_parsed_like_the_environment():
    assert load_settings({"ENVIRONMENT": "dev"}, client_max_retries="7").client_max_retries == 7


@pytest.mark.parametrize(
    ("env", "variable", "accepted"),
    [
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER", "parentbased_always_on"),
        ({"OTEL_TRACES_SAMPLER_ARG": "1.5"}, "OTEL_TRACES_SAMPLER_ARG", "a ratio from 0 to 1"),
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER", "otlp, console or none"),
        ({"OTEL_METRICS_EXPORTER": "prometheus,none"}, "OTEL_METRICS_EXPORTER", "prometheus"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT", "http://"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf, grpc"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL", "DEBUG, INFO"),
        ({"SERVICE_CLIENT_MAX_RETRIES": "three"}, "SERVICE_CLIENT_MAX_RETRIES", "an integer"),
        ({"SERVICE_CLIENT_MAX_RETRIES": "-1"}, "SERVICE_CLIENT_MAX_RETRIES", "0 to 20"),
        ({"SERVICE_CLIENT_TIMEOUT": "nan"}, "SERVICE_CLIENT_TIMEOUT", "seconds"),
        ({"CIRCUIT_BREAKER_FAILURE_THRESHOLD": "0"}, "CIRCUIT_BREAKER_FAILURE_THRESHOLD", "1 to 1000"),
        ({"OTEL_DIST_ACCESS_LOG": "maybe"}, "OTEL_DIST_ACCESS_LOG", "true or false"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "novalue"}, "OTEL_RESOURCE_ATTRIBUTES", "key=value"),
    ],
)
def test_bad_values_name_the_variable_and_the_accepted_values(env, variable, accepted):
    with pytest.raises(ConfigError) as error:
        load_settings(env)
    assert str(error.value).startswith(variable)
    assert accepted in str(error.value)


def test_otlp_exporter_without_endpoint_exports_to_the_spec_default():
    from otel_dist.testing import capture_telemetry

    with capture_telemetry(traces_exporter=("otlp",)) as cap:
        assert cap.telemetry.settings.otlp("traces").endpoint == "http://localhost:4318/v1/traces"


def test_unknown_override_is_refused():
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings({"ENVIRONMENT": "dev"}, servce_name="typo")


def test_secret_falls_back_to_jwt_secret_key_and_is_redacted():
    secret = "k" * 40
    s = load_settings({"JWT_SECRET_KEY": secret, "OTEL_EXPORTER_OTLP_HEADERS": "api-key=abc123"})
    assert s.jwt_secret == secret
    dump = repr(s.redacted())
    assert secret not in dump and "abc123" not in dump and "<redacted>" in dump


def test_bad_secret_value_is_not_echoed():
    with pytest.raises(ConfigError) as error:
        load_settings({"SERVICE_JWT_SECRET": "short-secret-value"})
    assert "short-secret-value" not in str(error.value)
    assert "SERVICE_JWT_SECRET" in str(error.value)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"SERVICE_JWT_SECRET": "s" * 32, "FAULT_INJECTION_ERROR_RATE": "0.5"}, "FAULT_INJECTION_ERROR_RATE"),
        ({"SERVICE_JWT_SECRET": "s" * 32, "SERVICE_AUTH_ENABLED": "false"}, "SERVICE_AUTH_ENABLED"),
    ],
)
def test_production_refuses_insecure_settings(env, variable):
    with pytest.raises(ConfigError, match=variable):
        load_settings({"ENVIRONMENT": "production", **env})


def test_every_setting_is_documented_in_one_table():
    rows = settings_table()
    assert len(rows) == len({r["name"] for r in rows})
    assert all(r["env"] and r["accepts"] and r["doc"] for r in rows)
    assert {r["name"] for r in rows if r["secret"]} >= {"jwt_secret", "otlp_headers"}


@pytest.mark.parametrize("environment", [None, "prod-eu", "production-us", "prd", "live", "staging", "Prod", "qa"])
def test_every_environment_not_listed_as_non_production_gets_the_production_rules(environment):
    env = {"ENVIRONMENT": environment} if environment else {}
    assert load_settings(env).production
    with pytest.raises(ConfigError, match="SERVICE_AUTH_ENABLED: auth cannot be disabled when ENVIRONMENT") as error:
        load_settings({**env, "SERVICE_JWT_SECRET": "s" * 32, "SERVICE_AUTH_ENABLED": "false"})
    assert "NON_PRODUCTION_ENVIRONMENTS" in str(error.value)
    with pytest.raises(ConfigError, match="FAULT_INJECTION"):
        load_settings({**env, "SERVICE_JWT_SECRET": "s" * 32, "FAULT_INJECTION_ERROR_RATE": "0.5"})


@pytest.mark.parametrize("environment", ["development", "dev", "LOCAL", "test", "demo"])
def test_only_listed_names_relax_the_rules(environment):
    s = load_settings({"ENVIRONMENT": environment, "SERVICE_AUTH_ENABLED": "false"})
    assert not s.production and s.service_auth_off == "SERVICE_AUTH_ENABLED=false"


def test_the_non_production_list_is_configurable():
    env = {"ENVIRONMENT": "sandbox", "NON_PRODUCTION_ENVIRONMENTS": "sandbox, Preview"}
    assert not load_settings(env).production
    assert load_settings({**env, "ENVIRONMENT": "dev", "SERVICE_JWT_SECRET": "s" * 32}).production


def test_deployment_mode_monolith_is_the_explicit_opt_out_and_the_dump_tells_the_truth():
    s = load_settings({"DEPLOYMENT_MODE": "monolith", "ENVIRONMENT": "production"})
    assert s.production and s.service_auth_off == "DEPLOYMENT_MODE=monolith"
    assert s.redacted()["auth_enabled"] is False and s.redacted()["production"] is True
    on = load_settings({"SERVICE_JWT_SECRET": "s" * 32})
    assert on.service_auth_off is None and on.redacted()["auth_enabled"] is True
    with pytest.raises(ConfigError, match=r"DEPLOYMENT_MODE.*microservices, monolith"):
        load_settings({"DEPLOYMENT_MODE": "mono"})


def test_url_credentials_are_redacted_in_the_dump():
    s = load_settings(
        {
            "ENVIRONMENT": "test",
            "AUTH_SERVICE_URL": "http://svc:pw-in-url@auth:8000",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "https://user:otlp-pass@collector:4318",
            "SERVICE_JWT_JWKS_URLS": "billing=https://keys.example/jwks.json?api_key=jwks-key-1",
        }
    )
    dump = repr(s.redacted())
    assert "pw-in-url" not in dump and "otlp-pass" not in dump and "jwks-key-1" not in dump
    assert "http://REDACTED:REDACTED@auth:8000" in dump and "api_key=REDACTED" in dump


def test_any_downstream_name_has_a_url_variable_by_the_documented_rule():
    from otel_dist._settings import service_url, service_url_variable

    assert service_url_variable("inventory") == "INVENTORY_SERVICE_URL"
    assert service_url_variable("user-profile") == "USER_PROFILE_SERVICE_URL"
    assert service_url_variable("billing.v2") == "BILLING_V2_SERVICE_URL"
    settings = load_settings(env={"AUTH_SERVICE_URL": "http://auth:8000/"})
    env = {"INVENTORY_SERVICE_URL": "http://inventory:8000/", "AUTH_SERVICE_URL": "http://elsewhere"}
    assert service_url("inventory", settings, env) == "http://inventory:8000"
    assert service_url("auth", settings, env) == "http://auth:8000"  # a row of the table wins: it was loaded
    assert service_url("shipping", settings, env) is None
    with pytest.raises(ConfigError, match=r"^INVENTORY_SERVICE_URL: invalid value 'inventory:8000'; accepted: an http"):
        service_url("inventory", settings, {"INVENTORY_SERVICE_URL": "inventory:8000"})
    for bad in ("", "9lives", "a b", "x/y"):
        with pytest.raises(ConfigError, match="not a service name"):
            service_url_variable(bad)


def test_the_public_api_is_complete_and_lazy():
    import otel_dist

    assert sorted(otel_dist.__all__) == sorted(otel_dist._MODULE_OF)
    for name in otel_dist.__all__:
        assert getattr(otel_dist, name) is not None
    with pytest.raises(AttributeError):
        otel_dist.no_such_name  # noqa: B018


def test_a_refused_url_is_named_without_its_credentials():
    with pytest.raises(ConfigError, match="AUTH_SERVICE_URL") as error:
        load_settings({"ENVIRONMENT": "test", "AUTH_SERVICE_URL": "ftp://svc:pw-in-bad-url@auth?token=t0k3n-value"})
    assert "pw-in-bad-url" not in str(error.value) and "t0k3n-value" not in str(error.value)
