"""Every fenced python/bash block in docs/ and README.md runs, page by page, in a fresh workspace.

The workspace is a temporary folder with `.venv` (a link to this venv) and a copy of `services/`, so a page
can add a service without touching the checkout; the blocks of one page run in order in the same workspace.
Convention: docs/contributing-docs.md and tests/docs_snippets.py.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from otel_dist.testing import free_port
from tests.docs_snippets import KINDS, ROOT, RUNNABLE, Block, all_blocks, blocks, pages, with_free_ports
from tests.example_services import clean_env, start_example_services

VENV = Path(sys.executable).parent.parent
TIMEOUT = 240  # seconds per block: generous for a loaded 2-core machine


def _runnable_pages() -> list[Path]:
    return [page for page in pages() if any(b.lang in RUNNABLE and b.kind != "skip" for b in blocks(page))]


def _workspace(tmp: Path) -> Path:
    ws = tmp / "ws"
    ws.mkdir()
    (ws / ".venv").symlink_to(VENV)
    shutil.copytree(ROOT / "services", ws / "services", ignore=shutil.ignore_patterns("__pycache__", "*.db"))
    for name in ("collector", "benchmarks"):
        (ws / name).symlink_to(ROOT / name)
    return ws


def _run(block: Block, code: str, ws: Path, env: dict[str, str]) -> str:
    if block.lang == "python":
        script = ws / ".snippet.py"
        script.write_text(code)
        argv = [sys.executable, str(script)]
    else:
        argv = ["bash", "-euo", "pipefail", "-c", code]
    proc = subprocess.Popen(
        argv, cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        out = "(timed out)"
    finally:
        try:  # background jobs the block started (`uvicorn ... &`) end with it
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        proc.wait()
    assert proc.returncode == 0, f"{block.where}: {block.lang} block failed ({proc.returncode}):\n{code}\n---\n{out}"
    return out


WALKTHROUGH = ROOT / "docs" / "tutorial" / "add-a-service.md"


@pytest.mark.parametrize(
    "page", [p for p in _runnable_pages() if p != WALKTHROUGH], ids=lambda p: str(p.relative_to(ROOT))
)
def test_every_block_of_the_page_runs(page, tmp_path):
    run_page(page, tmp_path)


def test_the_walkthrough_adds_a_third_service_called_by_the_gateway(tmp_path):
    """docs/tutorial/add-a-service.md, followed as written: new-service, its test, the gateway calls it."""
    started = time.monotonic()
    ws, outputs = run_page(WALKTHROUGH, tmp_path)
    took = time.monotonic() - started
    assert (ws / "services" / "inventory" / "app.py").is_file()
    assert (ws / "tests" / "test_inventory_service.py").is_file()
    gateway = (ws / "services" / "gateway" / "app.py").read_text()
    assert 'downstreams=["auth", "orders", "inventory"]' in gateway and "inventory.get(" in gateway
    last = outputs[-1]
    through_gateway = [line for line in last.splitlines() if line == '{"id":1,"name":"lamp","quantity":3}']
    assert len(through_gateway) == 2  # created at inventory, read through the gateway
    assert "one trace: gateway.log and inventory.log" in last
    assert '"inventory":"healthy"' in last
    print(f"walkthrough: {len(outputs)} blocks in {took:.0f} s")


def run_page(page: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """Run the page's blocks in order in a fresh workspace; the outputs of the blocks that ran."""
    ws = _workspace(tmp_path)
    env = clean_env(PATH=f"{VENV / 'bin'}{os.pathsep}{os.environ['PATH']}")
    env["PYTHONPATH"] = str(ws)
    ports: dict[str, str] = {}
    outputs: list[str] = []
    with ExitStack() as cleanup:
        services_env: dict[str, str] | None = None
        for block in blocks(page):
            if block.kind == "output":
                assert outputs, f"{block.where}: an output block follows no block that ran"
                missing = [line for line in block.code.splitlines() if line.strip() and line not in outputs[-1]]
                assert missing == [], f"{block.where}: not in the output of the block before: {missing}\n{outputs[-1]}"
                continue
            if block.kind == "patch":
                patch = subprocess.run(
                    ["patch", "-p1", "--forward", "--no-backup-if-mismatch"],
                    input=block.code,
                    cwd=ws,
                    capture_output=True,
                    text=True,
                )
                assert patch.returncode == 0, f"{block.where}: the diff does not apply:\n{patch.stdout}{patch.stderr}"
                continue
            if block.lang == "json":
                json.loads(block.code)
                continue
            if block.lang not in RUNNABLE or block.kind == "skip":
                continue
            code = with_free_ports(block.code, ports, free_port)
            if block.kind in ("file", "append"):
                target = ws / block.arg
                target.parent.mkdir(parents=True, exist_ok=True)
                before = target.read_text() + "\n\n" if block.kind == "append" else ""
                target.write_text(before + code)
                if block.lang == "python":
                    compile(target.read_text(), str(target), "exec")
                continue
            block_env = dict(env)
            if block.kind == "services":
                if services_env is None:
                    services_env = _start_services(tmp_path, cleanup)
                block_env.update(services_env)
            outputs.append(_run(block, code, ws, block_env))
    assert outputs, f"{page}: no block ran"
    return ws, outputs


def _start_services(tmp: Path, cleanup: ExitStack) -> dict[str, str]:
    secret = secrets.token_urlsafe(48)
    folder = tmp / "example-services"
    folder.mkdir()
    procs = start_example_services(folder, {"SERVICE_JWT_SECRET": secret}, cleanup)
    return {
        "SERVICE_JWT_SECRET": secret,
        "AUTH_SERVICE_URL": procs["auth"].url,
        "ORDERS_SERVICE_URL": procs["orders"].url,
        "GATEWAY_URL": procs["gateway"].url,
    }


def test_markers_are_known_and_skips_say_why():
    found = all_blocks()
    assert len(found) > 10  # the parser sees the blocks at all
    for block in found:
        assert block.kind in ("", *KINDS), f"{block.where}: unknown docs-test marker {block.kind!r}"
        if block.kind == "skip":
            assert len(block.arg) >= 20, f"{block.where}: a skipped block says what runs it instead"
            if block.lang == "python":
                compile(block.code, block.where, "exec")
            elif block.lang == "bash":
                subprocess.run(["bash", "-n", "-c", block.code], check=True)
        if block.kind in ("file", "append"):
            assert block.arg and not block.arg.startswith(("/", "..")), f"{block.where}: PATH is relative"
        if block.kind == "patch":
            assert block.lang == "diff", f"{block.where}: a patch block is a diff block"
        if block.kind == "output":
            assert block.lang == "text", f"{block.where}: an output block is a text block"
