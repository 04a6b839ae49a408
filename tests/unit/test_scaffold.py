"""`otel-dist new-service`: the files it writes are clean code in the project's style, and it never overwrites."""

import subprocess
import sys
from pathlib import Path

import pytest

from otel_dist._scaffold import new_service
from otel_dist._settings import ConfigError

BIN = Path(sys.executable).parent


def test_writes_a_service_and_its_test_that_pass_ruff(tmp_path):
    written = new_service("user-profile", tmp_path, ["auth", "billing.v2"])
    names = sorted(str(p.relative_to(tmp_path)) for p in written)
    assert names == [
        "services/__init__.py",
        "services/user_profile/__init__.py",
        "services/user_profile/app.py",
        "tests/test_user_profile_service.py",
    ]
    app = (tmp_path / "services/user_profile/app.py").read_text()
    assert 'create_app("user-profile", metadata=metadata, downstreams=["auth", "billing.v2"])' in app
    assert 'BillingV2 = Annotated[ServiceClient, Depends(downstream("billing.v2"))]' in app
    assert "USER_PROFILE_SERVICE_URL" in app
    test = (tmp_path / "tests/test_user_profile_service.py").read_text()
    assert '"BILLING_V2_SERVICE_URL": f"http://127.0.0.1:{free_port()}"' in test
    for path in written:
        compile(path.read_text(), str(path), "exec")
    for check in (["check", "--no-cache"], ["format", "--check", "--no-cache"]):
        lint = subprocess.run([str(BIN / "ruff"), *check, str(tmp_path)], capture_output=True, text=True)
        assert lint.returncode == 0, lint.stdout + lint.stderr


def test_refuses_to_overwrite_and_bad_names(tmp_path):
    new_service("inventory", tmp_path)
    with pytest.raises(ConfigError, match=r"services/inventory/__init__.py exists already"):
        new_service("inventory", tmp_path)
    with pytest.raises(ConfigError, match="not a service name"):
        new_service("9lives", tmp_path)
    with pytest.raises(ConfigError, match="not a service name"):
        new_service("shop", tmp_path, ["no/slash"])
