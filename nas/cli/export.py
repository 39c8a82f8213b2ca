"""``nas-export``: write a checkpoint as ONNX, TorchScript or safetensors, checked against PyTorch.

Bad input (not a checkpoint folder, corrupt files, a bad size, an unwritable --out, an --out over a
checkpoint's own files or inside a folder another command manages) ends with one line and exit code
2; an export that does not match PyTorch, or a write that fails (disk full), is not written and ends
with one line and exit code 1 (the previous file, if any, stays as it was).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from nas.cli.common import (Parser, add_checkpoint, add_image_size, add_out, check_output, check_pixels, check_writable,
                            write_failed)
from nas.deploy.checkpoint import METRICS_FILE, SPEC_FILE, WEIGHTS_FILE, load_checkpoint, read_checkpoint_info
from nas.deploy.export import DEFAULT_FILES, FORMATS, ExportError, checkpoint_spatial_dims, export_checkpoint
from nas.deploy.model_card import CARD_FILE
from nas.deploy.overlays import class_palette
from nas.run.limits import side_range
from nas.run.places import is_checkpoint_folder

PROG = "nas-export"
ONNX_FILE = DEFAULT_FILES["onnx"]
# what a checkpoint's metrics.json vouches for (weights, ONNX) or describes (spec, card): never an export's target
VERIFIED = (SPEC_FILE, WEIGHTS_FILE, METRICS_FILE, ONNX_FILE, CARD_FILE)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description="Export a checkpoint folder; ONNX and TorchScript outputs are checked "
                                           "against PyTorch.")
    add_checkpoint(parser)
    parser.add_argument("--format", required=True, choices=FORMATS,
                        help="onnx -> model.onnx, torchscript -> model.ts, safetensors -> the weights file")
    add_image_size(parser, side_range(8), default=None, nargs="+", old=("--input-size",),
                   help="trace size: S, or H W (D H W for a volume model); default: the size the "
                        "costs were measured at, else 64")
    add_out(parser, old=("--output",), help="file to write (default: inside the checkpoint folder)")
    return parser


def _check_output(parser: argparse.ArgumentParser, args: argparse.Namespace, output: Path) -> None:
    """Never over a checkpoint's verified files (its own or another's), never into a folder another
    command manages; the folder's own ``model.onnx`` (ONNX) and its weights onto themselves (a no-op
    for ``safetensors``) are what an export may write there."""
    own = Path(args.checkpoint).resolve()
    inputs = []
    for folder in dict.fromkeys((own, output.resolve().parent)):
        if folder != own and not is_checkpoint_folder(folder):
            continue
        allowed = {"onnx": ONNX_FILE, "safetensors": WEIGHTS_FILE}.get(args.format) if folder == own else None
        what = "a file of the checkpoint itself" if folder == own else f"a file of the checkpoint {folder}"
        inputs += [(f"{what} ({name})", folder / name) for name in VERIFIED if name != allowed]
    inside_own = output.resolve().is_relative_to(own)  # its own folder is where exports go by default
    check_output(parser, "--out", args.out if args.out is not None else output, inputs=inputs,
                 managed=not inside_own)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    size = args.image_size
    if size is not None and len(size) > 3:
        parser.error(f"--image-size takes S, H W or D H W, got {' '.join(map(str, size))}")
    try:
        load_checkpoint(args.checkpoint, "cpu")  # corrupt or mismatched files: refused before writing
        dims = checkpoint_spatial_dims(read_checkpoint_info(args.checkpoint).space)
    except ValueError as error:  # CheckpointError
        parser.error(str(error))
    if size is not None:
        check_pixels(parser, size * dims if len(size) == 1 else size)
        size = size[0] if len(size) == 1 else tuple(size)
    output = Path(args.out) if args.out is not None else Path(args.checkpoint) / DEFAULT_FILES[args.format]
    _check_output(parser, args, output)
    check_writable(parser, "cannot write", output, folder=False)
    try:
        result = export_checkpoint(args.checkpoint, args.format, output=output, input_size=size)
    except ValueError as error:  # --image-size sides that do not fit the model
        parser.error(str(error))
    except ExportError as error:
        print(f"{PROG}: export failed: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # disk full, folder made read-only meanwhile: nothing half-written
        return write_failed(PROG, error)
    print(result.summary())
    info = read_checkpoint_info(args.checkpoint)
    threshold = info.metrics.get("threshold")
    if info.out_channels > 1 and args.format != "safetensors":  # K classes: the label is the argmax, no threshold
        names = ", ".join(f"{value} {name}" for value, (name, _) in enumerate(class_palette(info.metrics, info.out_channels)))
        print(f"label = argmax over the {info.out_channels} logit channels ({names})")
    elif threshold is not None and args.format != "safetensors":  # the exported logits need it to become masks
        print(f"foreground where sigmoid(logits) > {threshold:g}: the threshold chosen on validation (metrics.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
