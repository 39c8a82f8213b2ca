"""What the seven commands share: one way to refuse, checked numbers, the same flag for the same idea.

Every refusal is ``<prog>: error: <one line>`` on stderr and exit code 2, with no usage block: an
unknown flag, a missing or malformed value ends with ``(see --help)``; a write that fails midway is
one line and exit code 1. Every command takes ``--version`` (``<prog> <version>``). Numeric flags are
parsed by ``number(Range)``, so NaN, infinity and out-of-range values are refused while parsing,
before anything is written; an empty path (``--out ''``) is refused too, never read as a default.
Old spellings of renamed flags keep working and print a one-line note. ``check_output`` keeps an
output off the command's inputs and out of folders other commands manage (``nas.run.places``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

from nas.run.limits import BATCH, SEED, Range, pixel_budget_problem


def one_line(message: object) -> str:
    """Whitespace folded to single spaces, other control characters escaped (``nas.io.printable``):
    a file or folder name in a message can neither split the line nor drive the terminal."""
    from nas.io import printable

    return printable(" ".join(str(message).split()))


def die(prog: str, message: object) -> NoReturn:
    """The one error line, then exit code 2."""
    print(f"{prog}: error: {one_line(message)}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def write_failed(prog: str, error: BaseException) -> int:
    """A write that failed midway (disk full, folder made read-only): one line, exit code 1."""
    print(f"{prog}: error: {one_line(error)}", file=sys.stderr, flush=True)
    return 1


HINT = " (see --help)"
PATH_FLAGS = frozenset({"out", "run", "checkpoint", "input", "data", "spec", "space_config", "storage"})


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are exactly one line (no usage block) and that takes ``--version``.

    Errors while the command line is read (an unknown flag, a missing value, an invalid choice) end
    with ``(see --help)``; the checks a command makes afterwards (``parser.error``) are one line as
    they are. A path flag given as an empty string is refused after parsing.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._reading = False
        super().__init__(*args, **kwargs)
        from nas import __version__

        self.add_argument("--version", action="version", version=f"{self.prog} {__version__}",
                          help="print the command's name and version and exit")

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        self._reading = True
        try:
            parsed = super().parse_args(args, namespace)
        finally:
            self._reading = False
        for action in self._actions:
            value = getattr(parsed, action.dest, None)
            if action.dest in PATH_FLAGS and isinstance(value, str) and not value.strip():
                self.error(f"argument {action.option_strings[0]}: '' is empty: it names no file or folder")
        return parsed

    def error(self, message: str) -> NoReturn:
        die(self.prog, message + (HINT if self._reading else ""))


def number(limits: Range) -> Callable[[str], int | float]:
    """An argparse type: the text parsed and checked against ``limits`` (finite, in range)."""
    def parse(text: str) -> int | float:
        try:
            return limits.parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = "integer" if limits.integer else "number"
    return parse


class _Renamed(argparse.Action):
    """An old spelling: stores like the new flag and says once, on stderr, that it is deprecated."""

    def __init__(self, option_strings: list[str], dest: str, new: str = "", **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"{parser.prog}: note: {option_string} is deprecated; use {self.new}", file=sys.stderr, flush=True)
        setattr(namespace, self.dest, values)


def renamed(container: Any, action: argparse.Action, *old: str) -> argparse.Action:
    """Keep ``old`` spellings of ``action``'s flag working (hidden from --help)."""
    for spelling in old:
        container.add_argument(spelling, dest=action.dest, type=action.type, nargs=action.nargs,
                               metavar=action.metavar, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                               action=_Renamed, new=action.option_strings[0])
    return action


# --------------------------------------------------------------------- the same flag for the same idea

def add_image_size(container: Any, limits: Range, *, default: Any, help: str, old: Sequence[str] = (),
                   nargs: str | None = None) -> argparse.Action:
    """``--image-size PX``: the input side a command trains, measures, traces or predicts at."""
    action = container.add_argument("--image-size", type=number(limits), default=default, metavar="PX",
                                    nargs=nargs, help=help)
    return renamed(container, action, *old)


def add_batch_size(container: Any, *, default: int, help: str, old: Sequence[str] = ()) -> argparse.Action:
    action = container.add_argument("--batch-size", type=number(BATCH), default=default, metavar="N", help=help)
    return renamed(container, action, *old)


def add_out(container: Any, *, help: str, default: str | None = None, old: Sequence[str] = ()) -> argparse.Action:
    """``--out PATH``; a command that needs it calls ``required`` after parsing (old spellings count)."""
    action = container.add_argument("--out", default=default, metavar="PATH", help=help)
    return renamed(container, action, *old)


def add_seed(container: Any, *, default: int | None, help: str) -> argparse.Action:
    return container.add_argument("--seed", type=number(SEED), default=default, metavar="S", help=help)


def add_device(container: Any, *, help: str = "auto (CUDA when present), cpu or cuda") -> argparse.Action:
    return container.add_argument("--device", default="auto", help=help)


def add_storage(container: Any, *, storage_help: str, name_help: str) -> None:
    container.add_argument("--storage", default=None, metavar="URL", help=storage_help)
    container.add_argument("--study-name", default=None, metavar="NAME", help=name_help)


def add_checkpoint(container: Any) -> argparse.Action:
    return container.add_argument("--checkpoint", required=True,
                                  help="checkpoint folder (spec.json, model.safetensors)")


# --------------------------------------------------------------------- checks after parsing

def required(parser: argparse.ArgumentParser, args: argparse.Namespace, dest: str, flag: str) -> Any:
    value = getattr(args, dest, None)
    if value is None:
        parser.error(f"the following arguments are required: {flag}{HINT}")
    return value


def check_device(parser: argparse.ArgumentParser, device: str) -> None:
    """An unknown device, or CUDA asked for but absent, is one line."""
    from nas.train.trainer import resolve_device

    try:
        resolve_device(device)
    except ValueError as error:
        parser.error(str(error))


def check_writable(parser: argparse.ArgumentParser, what: str, path: str | Path, *, folder: bool) -> None:
    """``<what> <path>: <why not>`` (``what`` is the flag, or e.g. ``cannot write``) unless ``path`` is writable."""
    from nas.io import unwritable

    problem = unwritable(Path(path), folder=folder)
    if problem:
        parser.error(f"{what} {path}: {problem}")


def check_pixels(parser: argparse.ArgumentParser, sides: Sequence[int], batch: int = 1,
                 what: str = "--image-size") -> None:
    problem = pixel_budget_problem(sides, batch, what=what)
    if problem:
        parser.error(problem)


def check_output(parser: argparse.ArgumentParser, flag: str, output: str | Path, *,
                 inputs: Sequence[tuple[str, str | Path]] = (), mine: Sequence[str] = (),
                 managed: bool = True) -> None:
    """``flag``'s ``output`` off every input (both ways) and out of the folders other commands manage
    (``nas.run.places``; ``mine``: run folders this command owns), else one line and exit code 2."""
    from nas.run.places import managed_folders, overlap_problem

    others = managed_folders(output, mine=mine) if managed and str(output).strip() else []
    problem = overlap_problem(flag, output, inputs, others)
    if problem:
        parser.error(problem)
