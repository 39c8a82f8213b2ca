"""``--workers N``: N processes of this machine share one study; the parent watches and reports.

Each worker is a fresh Python process (``python -m nas.engine.workers``) that runs ``entry(config)``:
the caller hands over the entry point and one config per worker as Python objects
(``nas.run.search.run_worker`` and its ``SearchConfig`` made worker ``i``), so this module names
no module above it and no command line is rebuilt. A worker is exactly a single-process search: it
samples from the shared storage (a journal file by default: SQLite does not take several writers
well), trains, and stops once the study holds enough finished trials. With several GPUs each
worker gets one (``CUDA_VISIBLE_DEVICES``, round robin); on a CPU the cores are split between the
workers. Worker output goes to ``<out>/logs/``; the console shows the live view. A worker that
dies (killed, crashed) has its trial failed and queued again, and is replaced while failures stay
under ``--max-failures``.
"""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

POLL_SECONDS = 2.0
C = TypeVar("C")


def gpu_pool(workers: int, gpu_count: int) -> list[str | None]:
    """The ``CUDA_VISIBLE_DEVICES`` of each worker: one GPU each, round robin; None on a CPU machine."""
    return [str(i % gpu_count) if gpu_count else None for i in range(workers)]


def start_worker(entry: Callable[[C], int], config: C, log: Any, env: dict[str, str]) -> subprocess.Popen:
    """A process running ``entry(config)`` (exit code: what it returns); its output goes to ``log``.

    ``entry`` must be a module-level function and ``config`` picklable: both travel to the child
    through its stdin (pickled by reference: the child imports ``entry``'s module itself).
    """
    process = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=log,
                               stderr=subprocess.STDOUT, env=env)
    try:
        process.stdin.write(pickle.dumps((entry, config)))
        process.stdin.close()
    except BrokenPipeError:  # the child died before reading: its exit code says so
        pass
    return process


def _environment(gpu: str | None, threads: int) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


def run_workers(entry: Callable[[C], int], configs: Sequence[C], out: Path, *,
                poll: Callable[[], Any], recover: Callable[[], list[int]], remaining: Callable[[], int],
                max_failures: int, gpu_count: int = 0) -> str | None:
    """Run ``entry(configs[i])`` in worker ``i`` (a restarted worker gets its config again) and wait for
    them; ``poll()`` refreshes the live view between checks.

    ``recover()`` fails and re-queues the trials of a dead worker; ``remaining()`` says how many
    finished trials are still wanted. Returns ``"failures"`` if workers kept dying, else None.
    Ctrl-C is passed on to the workers (each marks its trial interrupted) and re-raised.
    """
    logs = Path(out) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    workers = len(configs)
    threads = max(1, (os.cpu_count() or 1) // workers)  # torch's intra-op threads per worker
    gpus = gpu_pool(workers, gpu_count)
    running: dict[int, subprocess.Popen] = {}
    deaths = 0

    def start(index: int) -> None:
        log = open(logs / f"worker-{index}.log", "a")
        running[index] = start_worker(entry, configs[index], log, _environment(gpus[index], threads))
        log.close()

    for index in range(workers):
        start(index)
    try:
        while running:
            time.sleep(POLL_SECONDS)
            poll()
            for index, process in list(running.items()):
                code = process.poll()
                if code is None:
                    continue
                del running[index]
                if code != 0:
                    deaths += 1
                    print(f"worker {index} ended with exit code {code} (log: {logs / f'worker-{index}.log'})",
                          flush=True)
                    recover()
                    if deaths < max_failures and remaining() > 0:
                        start(index)
        poll()
    except KeyboardInterrupt:
        for process in running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 60
        for process in running.values():
            try:
                process.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
        raise
    return "failures" if deaths >= max_failures else None


def _worker_main() -> int:
    """Inside a worker: the entry point and config from the parent (stdin), then the entry's exit code."""
    entry, config = pickle.load(sys.stdin.buffer)
    return entry(config)


if __name__ == "__main__":
    sys.exit(_worker_main())
