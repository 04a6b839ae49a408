"""Zipkin (the trace UI) and VictoriaMetrics (long-term metrics) for the local stack.

    python collector/backends.py install [zipkin] [victoriametrics]   # .ci/run runs this
    python collector/backends.py where                                 # paths, or what is missing

Where they come from (both fetched once, then reused):

- **Zipkin** ``io.zipkin:zipkin-server:ZIPKIN_VERSION:jar:exec`` from Maven Central with ``mvn
  dependency:get`` into Maven's local repository (``~/.m2/repository``, or
  ``$OTEL_DIST_MAVEN_REPO``): one executable jar with the UI and the API, run on the machine's Java.
- **VictoriaMetrics** built from its Go module with ``go install`` (the Go toolchain the collector
  build needs anyway) into ``$GOBIN`` / ``$(go env GOPATH)/bin``. Chosen over Debian's
  ``victoria-metrics`` package (1.79, from 2022) because the Go build serves the vmui query UI, is a
  current release, and needs no root; it costs ~1 to 3 min of compile once.

Overrides: ``OTEL_DIST_ZIPKIN_JAR`` (a jar), ``OTEL_DIST_VICTORIAMETRICS_BIN`` (a binary).
Standard library only: ``stack.py`` imports this, and so do the demo and the tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ZIPKIN_VERSION = "3.6.1"
VICTORIAMETRICS_VERSION = "v1.151.0"
VICTORIAMETRICS_MODULE = "github.com/VictoriaMetrics/VictoriaMetrics/app/victoria-metrics"
ENV_ZIPKIN_JAR = "OTEL_DIST_ZIPKIN_JAR"
ENV_VICTORIAMETRICS_BIN = "OTEL_DIST_VICTORIAMETRICS_BIN"
ENV_MAVEN_REPO = "OTEL_DIST_MAVEN_REPO"
ZIPKIN_SIZE_MB = 135  # for the progress line only

Say = Callable[[str], None]


class BackendMissing(RuntimeError):
    """A backend is not installed (the message says how to install it)."""


# --------------------------------------------------------------------------- Zipkin


def maven_repo() -> Path:
    return Path(os.environ.get(ENV_MAVEN_REPO) or Path.home() / ".m2" / "repository")


def zipkin_jar() -> Path:
    """The Zipkin server jar to run; BackendMissing (naming the install command) if absent."""
    explicit = os.environ.get(ENV_ZIPKIN_JAR)
    jar = Path(explicit) if explicit else _zipkin_jar_in_repo()
    if not jar.is_file():
        raise BackendMissing(
            f"Zipkin server jar not found at {jar}: run `python collector/backends.py install zipkin` "
            f"(needs Java 17+ and Maven) or set {ENV_ZIPKIN_JAR}"
        )
    return jar


def zipkin_command(jar: Path, port: int) -> list[str]:
    """Zipkin on 127.0.0.1:port, in-memory storage, UI at /zipkin/, API at /api/v2/."""
    java = shutil.which("java")
    if java is None:
        raise BackendMissing(
            "java not found on PATH: Zipkin needs Java 17+ (Debian: apt-get install default-jre-headless)"
        )
    return [
        java,
        "-Xmx256m",
        "-XX:+UseSerialGC",  # one GC thread: the machine is shared, the heap is small
        "-XX:TieredStopAtLevel=1",  # faster start-up on a busy machine (the JIT's first tier only)
        "-jar",
        str(jar),
        "--armeria.ports[0].ip=127.0.0.1",
        f"--armeria.ports[0].port={port}",
        "--armeria.ports[0].protocols[0]=http",
    ]


def install_zipkin(say: Say = print) -> Path:
    """Fetch the Zipkin jar with Maven unless it is there; progress every few seconds."""
    jar = _zipkin_jar_in_repo()
    if jar.is_file():
        say(f"zipkin: {jar} (already fetched)")
        return jar
    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if missing:
        raise BackendMissing(
            f"cannot fetch Zipkin: {' and '.join(missing)} not found on PATH. Zipkin runs on Java 17+ and is "
            "fetched from Maven Central with Maven (Debian: apt-get install default-jre-headless maven)"
        )
    artifact = f"io.zipkin:zipkin-server:{ZIPKIN_VERSION}"
    say(f"zipkin: fetching {artifact} (exec jar, ~{ZIPKIN_SIZE_MB} MB) into {maven_repo()}")
    cmd = [
        "mvn",
        "-B",
        f"-Dmaven.repo.local={maven_repo()}",
        "dependency:get",
        f"-Dartifact=io.zipkin:zipkin-server:{ZIPKIN_VERSION}:jar:exec",
        "-Dtransitive=false",
    ]
    folder = jar.parent

    def downloaded_mb() -> float:
        sizes = [p.stat().st_size for p in folder.glob(f"{jar.name}*")] if folder.is_dir() else []
        return max(sizes, default=0) / 1e6

    rc, tail = _run_with_progress(
        cmd, say, lambda: f"zipkin: {downloaded_mb():.0f} of ~{ZIPKIN_SIZE_MB} MB", interval=5
    )
    if rc != 0 or not jar.is_file():
        raise BackendMissing(f"mvn failed (exit {rc}) fetching Zipkin:\n{tail}")
    say(f"zipkin: ready {jar} ({jar.stat().st_size / 1e6:.0f} MB)")
    return jar


def _zipkin_jar_in_repo() -> Path:
    v = ZIPKIN_VERSION
    return maven_repo() / "io" / "zipkin" / "zipkin-server" / v / f"zipkin-server-{v}-exec.jar"


# --------------------------------------------------------------------------- VictoriaMetrics


def victoriametrics_bin() -> Path:
    """The victoria-metrics binary; BackendMissing (naming the install command) if absent."""
    explicit = os.environ.get(ENV_VICTORIAMETRICS_BIN)
    path = Path(explicit) if explicit else _go_bin_dir() / "victoria-metrics"
    if not os.access(path, os.X_OK):
        raise BackendMissing(
            f"victoria-metrics not found at {path}: run `python collector/backends.py install victoriametrics` "
            f"(needs Go) or set {ENV_VICTORIAMETRICS_BIN}"
        )
    return path


def victoriametrics_command(binary: Path, port: int, data_dir: Path) -> list[str]:
    return [
        str(binary),
        f"-httpListenAddr=127.0.0.1:{port}",
        f"-storageDataPath={data_dir}",
        # The default (30 s) hides the newest samples from queries; a local stack wants them now.
        "-search.latencyOffset=1s",
        "-retentionPeriod=30d",
        "-loggerLevel=WARN",
    ]


def install_victoriametrics(say: Say = print) -> Path:
    """``go install`` the pinned VictoriaMetrics unless that version is installed; a heartbeat meanwhile."""
    target = _go_bin_dir() / "victoria-metrics"
    if os.access(target, os.X_OK) and VICTORIAMETRICS_VERSION in _version_of(target):
        say(f"victoriametrics: {target} (already built, {VICTORIAMETRICS_VERSION})")
        return target
    if shutil.which("go") is None:
        raise BackendMissing("cannot build VictoriaMetrics: the Go toolchain (go) is not on PATH")
    say(f"victoriametrics: go install {VICTORIAMETRICS_MODULE}@{VICTORIAMETRICS_VERSION} (1 to 3 min, once)")
    started = time.monotonic()
    env = {**os.environ, "GOBIN": str(target.parent)}
    rc, tail = _run_with_progress(
        ["go", "install", f"{VICTORIAMETRICS_MODULE}@{VICTORIAMETRICS_VERSION}"],
        say,
        lambda: f"victoriametrics: still building ({time.monotonic() - started:.0f} s)",
        interval=20,
        env=env,
    )
    if rc != 0 or not os.access(target, os.X_OK):
        raise BackendMissing(f"go install of VictoriaMetrics failed (exit {rc}):\n{tail}")
    say(f"victoriametrics: ready {target} ({time.monotonic() - started:.0f} s)")
    return target


def _go_bin_dir() -> Path:
    gobin = os.environ.get("GOBIN")
    if gobin:
        return Path(gobin)
    gopath = os.environ.get("GOPATH")
    if not gopath and shutil.which("go"):
        gopath = subprocess.run(["go", "env", "GOPATH"], capture_output=True, text=True).stdout.strip()
    return Path(gopath or Path.home() / "go") / "bin"


def _version_of(binary: Path) -> str:
    # A `go install`ed victoria-metrics prints no -version (no release ldflags): ask Go for its module.
    try:
        return subprocess.run(["go", "version", "-m", str(binary)], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


# --------------------------------------------------------------------------- helpers


def _run_with_progress(
    cmd: list[str], say: Say, progress: Callable[[], str], interval: float, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run ``cmd``; say ``progress()`` every ``interval`` s until it ends. (exit code, output tail)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    while True:
        try:
            rc = proc.wait(timeout=interval)
            break
        except subprocess.TimeoutExpired:
            say(progress())
    reader.join(timeout=5)
    return rc, "".join(lines[-25:])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    action, names = (args[0] if args else "where"), (args[1:] or ["zipkin", "victoriametrics"])
    unknown = set(names) - {"zipkin", "victoriametrics"} or ({action} - {"install", "where"})
    if unknown:
        print(
            f"usage: backends.py install|where [zipkin] [victoriametrics] (unknown: {sorted(unknown)})",
            file=sys.stderr,
        )
        return 2
    say = lambda line: print(line, flush=True)  # noqa: E731
    try:
        for name in names:
            if action == "install":
                (install_zipkin if name == "zipkin" else install_victoriametrics)(say)
            else:
                say(f"{name}: {zipkin_jar() if name == 'zipkin' else victoriametrics_bin()}")
    except BackendMissing as exc:
        print(f"backends.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
