"""Where an output may go: never onto an input, never into a folder another command manages.

Every command that writes checks its destination with ``overlap_problem`` before any work (one
line, exit code 2, nothing written): ``nas-search --out`` (and a ``--storage`` file), ``nas-compress
--out``, ``nas-export --out``, ``nas-predict --out``. ``inputs`` are what the command reads (the data
folder, the checkpoint, the input images); ``managed_folders`` finds the folders around a destination
that another command owns: a run's ``best/``, ``trials/``, ``finalists/``, ``baselines/`` and
``compressed/``, a data folder (``images/`` + ``masks/``) and a checkpoint folder.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from nas.deploy.checkpoint import SPEC_FILE, WEIGHTS_FILE

Place = tuple[str, "str | os.PathLike[str]"]  # (what it is, for the message; its path)

RUN_MARKERS = ("study.db", "study.journal", "status.json", "trials.csv")  # a folder holding one is a run
RUN_FOLDERS = {  # a run's folders that a command rebuilds or fills, and who
    "best": "nas-search and nas-finalize rebuild it whole",
    "trials": "nas-search writes a checkpoint per trial there",
    "finalists": "nas-finalize writes there",
    "baselines": "nas-search writes there",
    "compressed": "nas-compress writes there",
}
MASK_FOLDERS = ("masks", "1st_manual")  # beside images/: a data folder (flat, split or DRIVE layout)


def overlap_problem(flag: str, output: str | os.PathLike[str], inputs: Iterable[Place] = (),
                    managed: Iterable[Place] = ()) -> str | None:
    """Why an output (the value of ``flag``) could land on an input or in a managed folder, or None.

    Paths are compared resolved (symlinks followed, ``..`` collapsed). An output is refused when it is
    an input, lies inside one or contains one (both ways), and when it is or lies inside a managed
    folder (one way: a run folder beside ``best/`` is fine). An empty value is refused too: it is
    read neither as the default nor as the current folder.
    """
    if not str(output).strip():
        return f"{flag} '' is empty: it names no file or folder (leave the flag out for its default)"
    target = Path(output).resolve()
    for what, path in inputs:
        source = Path(path).resolve()
        if target == source:
            return f"{flag} {output} is {what}: an output never replaces an input; choose another path"
        if target.is_relative_to(source):
            return f"{flag} {output} is inside {what}: an output never goes into an input; choose a path outside it"
        if source.is_relative_to(target):
            return f"{flag} {output} contains {what}: an output never goes around an input; choose a path beside it"
    for what, path in managed:
        if target.is_relative_to(Path(path).resolve()):
            return f"{flag} {output} is inside {what}; choose a path outside it"
    return None


def storage_file(url: str) -> Path | None:
    """The file of a SQLite or journal storage URL (None for a server): an output of ``nas-search`` too."""
    for scheme, keep in (("sqlite:///", 0), ("journal:///", 1)):
        if url.startswith(scheme):
            return Path(url[len(scheme) - keep:])
    return None


def is_data_folder(folder: Path) -> bool:
    return (folder / "images").is_dir() and any((folder / name).is_dir() for name in MASK_FOLDERS)


def is_checkpoint_folder(folder: Path) -> bool:
    return (folder / SPEC_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def managed_folders(output: str | os.PathLike[str], *, mine: Sequence[str] = ()) -> list[Place]:
    """The folders ``output`` is or lies in that another command owns (``mine``: run folders the
    asking command owns itself, e.g. ``compressed`` for ``nas-compress``)."""
    target = Path(output).resolve()
    found: list[Place] = []
    for folder in (target, *target.parents):
        if folder != target and any((folder / marker).is_file() for marker in RUN_MARKERS):
            for name, why in RUN_FOLDERS.items():
                if name not in mine and target.is_relative_to(folder / name):
                    found.append((f"the run folder {folder / name} ({why})", folder / name))
        if is_data_folder(folder):
            found.append((f"the data folder {folder} (images/ and masks/ are inputs of nas-search)", folder))
        if is_checkpoint_folder(folder):
            found.append((f"the checkpoint folder {folder} (its files are checked against metrics.json)", folder))
    return found
