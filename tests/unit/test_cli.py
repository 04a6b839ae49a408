"""The `otel-dist` command: a fast --help, a readable `stack status`, hints that name otel-dist commands."""

import json
import subprocess
import sys
import time

from otel_dist.cli import status_table


def test_help_loads_no_heavy_module():
    # Deterministic stand-in for "--help under 0.3 s": what makes it slow is importing these.
    code = (
        "import sys; from otel_dist.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = {'fastapi', 'sqlalchemy', 'httpx', 'opentelemetry', 'pydantic', 'uvicorn', 'jwt'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "[]"
    assert "new-service" in out and "doctor" in out


def test_stack_status_is_a_table():
    state = {
        "ports": {"otlp_http": 4318},
        "pids": {"sink": 101, "collector": 102, "prometheus": 103},
        "urls": {"prometheus": "http://127.0.0.1:9090", "otlp_http": "http://127.0.0.1:4318"},
        "data_dir": "/tmp/stack-data",
        "state_file": "collector/_build/stack.json",
        "started_at": time.time() - 125.5,  # half a second of margin for a slow machine
        "alive": {"sink": True, "collector": True, "prometheus": False},
    }
    table = status_table(json.dumps(state)).splitlines()
    assert table[0] == "otel-dist stack: running, up 2m 05s; data in /tmp/stack-data"
    assert "  collector                   102  up" in table
    assert "  prometheus                  103  DOWN" in table
    assert "  otlp_http              http://127.0.0.1:4318" in table
    assert table[-1] == "  JSON: otel-dist stack status --json; stop: otel-dist stack down"
