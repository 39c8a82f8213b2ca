"""``nas-export``: write a checkpoint as ONNX, TorchScript or safetensors, checked against PyTorch.

Bad input (not a checkpoint folder, corrupt files, a bad size, an unwritable --output) ends with one
line and exit code 2; an export that does not match PyTorch, or a write that fails (disk full), is not
written and ends with one line and exit code 1 (the previous file, if any, stays as it was).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from nas.deploy.checkpoint import load_checkpoint
from nas.deploy.export import DEFAULT_FILES, FORMATS, ExportError, export_checkpoint
from nas.io import unwritable


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nas-export",
        description="Export a checkpoint folder; ONNX and TorchScript outputs are checked against PyTorch.",
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder (spec.json, model.safetensors)")
    parser.add_argument("--format", required=True, choices=FORMATS,
                        help="onnx -> model.onnx, torchscript -> model.ts, safetensors -> the weights file")
    parser.add_argument("--input-size", type=int, nargs="+", metavar="PX", default=None,
                        help="trace size: S, or H W (D H W for a volume model); default: the size the "
                             "costs were measured at, else 64")
    parser.add_argument("--output", default=None, help="file to write (default: inside the checkpoint folder)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    size = args.input_size
    if size is not None:
        if len(size) > 3 or min(size) < 8:
            parser.error(f"--input-size takes S, H W or D H W, each >= 8, got {' '.join(map(str, size))}")
        size = size[0] if len(size) == 1 else tuple(size)
    try:
        load_checkpoint(args.checkpoint, "cpu")  # corrupt or mismatched files: refused before writing
    except ValueError as error:  # CheckpointError
        parser.error(str(error))
    output = Path(args.output) if args.output else Path(args.checkpoint) / DEFAULT_FILES[args.format]
    problem = unwritable(output)
    if problem:
        parser.error(f"cannot write {output}: {problem}")
    try:
        result = export_checkpoint(args.checkpoint, args.format, output=output, input_size=size)
    except ValueError as error:  # --input-size sides that do not fit the model
        parser.error(str(error))
    except ExportError as error:
        print(f"{parser.prog}: export failed: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # disk full, folder made read-only meanwhile: nothing half-written
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
