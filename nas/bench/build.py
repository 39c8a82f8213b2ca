"""Build a benchmark table, resumably, on every core: ``build_table(task, count, ...)``.

Each finished training is one JSON line appended (and fsynced) to the task's journal, so a kill loses
only the trainings in flight; a rerun reads the journal and the table already exported and trains
only what neither holds. ``export_table`` merges the journal into the parquet file that ships in the
repository (written atomically). Workers are processes of one torch thread each (``THREADS``).
"""
from __future__ import annotations

import json
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

from nas.bench.table import TASKS, THREADS, Entry, Task, build_order, task_plan, train_entry

Log = Callable[[str], None]
_WORKER: dict[str, Any] = {}


def journal_rows(journal: Path) -> list[dict[str, Any]]:
    """Every complete line of ``journal`` (a line cut by a kill is skipped)."""
    rows = []
    if not journal.exists():
        return rows
    for line in journal.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def read_rows(table: Path, journal: Path) -> pd.DataFrame:
    """The exported table and the journal together, one row per (arch_id, seed)."""
    frames = [pd.read_parquet(table)] if table.exists() else []
    rows = journal_rows(journal)
    if rows:
        frames.append(pd.DataFrame(rows))
    if not frames:
        return pd.DataFrame(columns=["arch_id", "seed"])
    frame = pd.concat(frames, ignore_index=True)
    return frame.drop_duplicates(["arch_id", "seed"], keep="first").reset_index(drop=True)


def export_table(table: Path, journal: Path) -> pd.DataFrame:
    """Merge the journal into ``table`` (parquet, atomic) and return the merged frame."""
    frame = read_rows(table, journal)
    tmp = table.with_name(f".{table.name}.tmp")
    table.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(tmp, index=False, compression="zstd")
    os.replace(tmp, table)
    return frame


def _init_worker(task: Task) -> None:
    import torch

    torch.set_num_threads(THREADS)
    torch.set_num_interop_threads(THREADS)
    _WORKER["plan"], _WORKER["settings"] = task_plan(task)


def _train(entry: Entry) -> dict[str, Any]:
    return train_entry(_WORKER["plan"], _WORKER["settings"], entry)


def pending(order: Iterable[Entry], done: set[tuple[str, int]]) -> list[Entry]:
    return [entry for entry in order if entry.key not in done]


def build_table(task: Task, count: int, table: Path, journal: Path, *, workers: int = 2,
                noise_every: int | None = None, limit: int | None = None, log: Log = print) -> int:
    """Train what ``table`` and ``journal`` lack of the task's first ``count`` samples (plus references and
    noise seeds), ``workers`` at a time; returns how many trainings finished in this call."""
    frame = read_rows(table, journal)
    check_fidelity(frame, task, table, journal)
    plan, _ = task_plan(task)
    done = {(str(a), int(s)) for a, s in zip(frame["arch_id"], frame["seed"])}
    noise_every = task.noise_every if noise_every is None else noise_every
    todo = pending(build_order(plan, count, noise_every=noise_every, presets=task.presets), done)
    if limit is not None:
        todo = todo[:limit]
    log(f"table {task.name}: {len(done)} trainings done, {len(todo)} to go, {workers} worker(s) x {THREADS} thread")
    if not todo:
        return 0
    journal.parent.mkdir(parents=True, exist_ok=True)
    _end_cut_line(journal)
    finished = 0
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(task,)) as pool, \
            journal.open("a", encoding="utf-8") as out:
        queue = iter(todo)
        running = {pool.submit(_train, entry): entry for entry in _take(queue, workers)}
        while running:
            ready, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in ready:
                entry = running.pop(future)
                try:
                    row = future.result()
                except Exception as error:  # a failed training is logged, not recorded: a rerun retries it
                    log(f"  {entry.arch_id} seed {entry.seed}: failed: {type(error).__name__}: {error}")
                else:
                    row["task"] = task.name
                    out.write(json.dumps(row) + "\n")
                    out.flush()
                    os.fsync(out.fileno())
                    finished += 1
                    log(f"  {entry.arch_id} seed {entry.seed}: val {row['final_val_dice']:.3f} test "
                        f"{row['final_test_dice'] if row['final_test_dice'] is not None else float('nan'):.3f} "
                        f"{row['macs'] / 1e6:.1f} MMAC {row['train_cpu_s']:.1f} s CPU ({finished}/{len(todo)})")
                for nxt in _take(queue, 1):
                    running[pool.submit(_train, nxt)] = nxt
    return finished


def check_fidelity(frame: pd.DataFrame, task: Task, table: Path, journal: Path) -> None:
    """A table trained at another number of epochs than ``task`` names is not resumed: its rows would be
    counted done and mixed with the new ones (ValueError, naming what to move aside)."""
    if "val_dice" not in frame or not len(frame):
        return
    epochs = frame["val_dice"].map(len)
    other = sorted(set(epochs[epochs != task.epochs].tolist()))
    if other:
        raise ValueError(f"{table.name} / {journal.name} hold {int((epochs != task.epochs).sum())} training(s) of "
                         f"{', '.join(map(str, other))} epoch(s); task {task.name} trains {task.epochs}: move both "
                         f"aside to build it anew")


def _end_cut_line(journal: Path) -> None:
    """End a line a kill cut short, so the next row starts a line of its own instead of joining it."""
    if journal.exists() and journal.stat().st_size:
        with journal.open("rb") as existing:
            existing.seek(-1, os.SEEK_END)
            cut = existing.read(1) != b"\n"
        if cut:
            with journal.open("a", encoding="utf-8") as out:
                out.write("\n")


def _take(queue: Iterable[Entry], n: int) -> list[Entry]:
    out = []
    for entry in queue:
        out.append(entry)
        if len(out) >= n:
            break
    return out


def task_by_name(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown benchmark task {name!r}; known: {', '.join(TASKS)}") from None
