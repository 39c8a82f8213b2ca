"""Running the project's CLIs as subprocesses of a part: each in its own process group, never past
the budget, its output in a log; and reading the CSV files they write."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .base import ROOT, Context, PartTimeout


def entry_points() -> dict[str, str]:
    """``{"nas-search": "nas.cli.search:main", ...}`` from pyproject.toml's [project.scripts]."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    try:
        import tomllib

        return dict(tomllib.loads(text)["project"]["scripts"])
    except ImportError:  # Python 3.10: the table is simple enough to read by hand
        section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
        return dict(re.findall(r'^\s*([\w-]+)\s*=\s*"([^"]+)"', section, re.M))


def cli_command(name: str, *args: Any) -> list[str]:
    """The command line of one of the project's CLIs, run by this interpreter from the source tree."""
    target = entry_points()[name]
    module, _, function = target.partition(":")
    code = f"import sys; from {module} import {function} as main; sys.exit(main())"
    return [sys.executable, "-c", code, *map(str, args)]


def run_command(ctx: Context, command: list[str], *, label: str, cap_s: float,
                env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``command`` in the repository root, in its own process group (killed whole on a timeout),
    with at most ``cap_s`` seconds and never past the budget; its output goes to a log under work/."""
    timeout = min(cap_s, ctx.remaining() - 3.0)
    if timeout < 1.0:
        raise PartTimeout(f"{label}: no budget left to start it")
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    pythonpath = full_env.get("PYTHONPATH", "")
    if str(ROOT) not in pythonpath.split(os.pathsep):
        full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), pythonpath) if p)
    log = ctx.work / "logs" / f"{label}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log, "w", encoding="utf-8") as handle:
        handle.write("$ " + " ".join(command) + "\n")
        handle.flush()
        process = subprocess.Popen(command, cwd=ROOT, env=full_env, stdout=handle, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        ctx.children.append(process)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(process)
            raise PartTimeout(f"{label} did not finish within {timeout:.0f} s (killed); log tail: "
                              f"{tail(log, 3)}") from None
        finally:
            ctx.children.remove(process)
    output = log.read_text(encoding="utf-8", errors="replace")
    result = subprocess.CompletedProcess(command, process.returncode, output, "")
    result.seconds = time.monotonic() - started  # type: ignore[attr-defined]
    if check and process.returncode != 0:
        raise RuntimeError(f"{label} exited with {process.returncode}: {tail(log, 3)}")
    return result


def tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass



def read_csv(path: Path) -> list[dict[str, str]]:
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))

