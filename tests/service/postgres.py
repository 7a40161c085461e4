"""A throw-away PostgreSQL server for tests: initdb in a temp dir, unix socket only, no TCP.

The server binaries refuse to run as root, so as root they run as the ``postgres`` user in a
folder it owns. Tests skip with a reason where the binaries are absent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _bin(tool: str) -> str | None:
    """``tool`` on PATH, else in Debian's versioned folder (``/usr/lib/postgresql/N/bin``)."""
    found = shutil.which(tool)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    return next((str(v / tool) for v in versions if (v / tool).is_file()), None)


def _as_postgres(cmd: list[str]) -> list[str]:
    cmd = [_bin(cmd[0]) or cmd[0], *cmd[1:]]
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def missing_reason() -> str | None:
    """Why no server can be started here, or ``None``."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if _bin(tool) is None:
            return f"PostgreSQL server binaries not found ({tool}; apt-get install postgresql)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: cannot start PostgreSQL as the postgres user"
    return None


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server; yield its SQLAlchemy URL (unix socket); stop and delete it afterwards."""
    root = Path(tempfile.mkdtemp(prefix="gh-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data = root / "data"
    run = {"check": True, "capture_output": True, "timeout": 120}
    subprocess.run(
        _as_postgres(
            ["initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"]
        ),
        **run,
    )
    opts = f"-k {root} -c listen_addresses=''"
    subprocess.run(
        _as_postgres(
            ["pg_ctl", "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start"]
        ),
        **run,
    )
    try:
        yield f"postgresql://postgres@/postgres?host={root}"
    finally:
        subprocess.run(
            _as_postgres(["pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)
