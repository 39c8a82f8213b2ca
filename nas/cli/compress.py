"""``nas-compress``: prune, fine-tune (optionally distil), gate and quantize a run's Pareto checkpoints.

``--run DIR`` compresses every ``DIR/best/*`` checkpoint and writes ``DIR/compressed/<variant>/`` plus
``DIR/compressed/compressed.json``; ``--checkpoint FOLDER`` compresses one (output beside it in
``<FOLDER>/../../compressed``, the run's ``compressed/`` for a ``best/`` or
``trials/`` checkpoint, unless ``--out``). The data split is rebuilt from the run's study
(``search_config``: data, image size, seed) unless ``--data`` is given. Bad input ends with one line
and exit code 2 before anything is written; so does an ``--out`` on or around a checkpoint or the data
folder, or inside a run's ``best/`` or ``trials/`` (``nas.run.places``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from compress.prune import IMPORTANCES, RATIO_OF
from nas.cli.common import (Parser, add_batch_size, add_image_size, add_out, add_seed, check_output, check_pixels,
                            check_writable, number, write_failed)
from nas.run.limits import integers, numbers, side_range
from nas.run.settings import RunSettings

PROG = "nas-compress"
RATIO = numbers(0, 1, low_open=True, high_open=True)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description="Channel-prune, fine-tune and quantize the Pareto checkpoints of a "
                                           "nas-search run.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="run directory of nas-search (its best/* checkpoints are compressed)")
    source.add_argument("--checkpoint", help="one checkpoint folder (spec.json + model.safetensors)")
    add_out(parser, help="output folder (default: <run>/compressed)")
    parser.add_argument("--data", default=None,
                        help="data source (default: the run's, read from its study.db)")
    add_image_size(parser, side_range(8, 4096), default=None,
                   help="patch / cost input side (default: the run's, else 64)")
    add_seed(parser, default=None, help="data split seed (default: the run's, else 0)")
    parser.add_argument("--ratios", type=_ratios, default=(0.5,),
                        help="comma-separated shares to remove, each in (0, 1), e.g. 0.25,0.5")
    parser.add_argument("--ratio-of", choices=RATIO_OF, default="macs",
                        help="the ratio is a share of MACs (reached by bisection) or of channels per layer")
    parser.add_argument("--importance", default="magnitude",
                        help=f"comma-separated channel importance criteria: {', '.join(IMPORTANCES)}")
    parser.add_argument("--global-pruning", action="store_true",
                        help="rank channels across layers instead of the same share per layer")
    parser.add_argument("--iterative-steps", type=number(integers(1, 1000)), default=1,
                        help="pruning steps to reach each ratio")
    parser.add_argument("--round-to", type=number(integers(1, 1024)), default=8,
                        help="kept channel counts are multiples of this (1: no rounding)")
    parser.add_argument("--finetune-epochs", type=number(integers(0, 100_000)), default=2,
                        help="fine-tuning epochs after pruning (0: none)")
    parser.add_argument("--distill", action="store_true",
                        help="distil from the unpruned model while fine-tuning (task loss + weight x logit loss)")
    parser.add_argument("--distill-weight", type=number(numbers(0, 1000)), default=1.0,
                        help="weight of the distillation loss")
    parser.add_argument("--distill-loss", choices=("mse", "kl"), default="mse", help="distillation loss on logits")
    parser.add_argument("--max-dice-drop", type=number(numbers(0, 100)), default=None,
                        help="keep only variants losing at most this many Dice points (100 x Dice)")
    parser.add_argument("--no-quantize", action="store_true",
                        help="skip the fp32/fp16/int8 ONNX exports and their measurements")
    add_batch_size(parser, default=8, help="fine-tuning batch size")
    parser.add_argument("--lr", type=number(numbers(0, 10, low_open=True)), default=3e-3,
                        help="peak fine-tuning learning rate (warm-up, cosine decay; 1e-3 recovered less in 2 epochs)")
    return parser


def _ratios(text: str) -> tuple[float, ...]:
    """``0.25,0.5``: each a finite share in (0, 1)."""
    try:
        values = tuple(RATIO.parse(part) for part in text.split(",") if part.strip())
    except ValueError:
        values = ()
    if not values:
        raise argparse.ArgumentTypeError(f"must be comma-separated shares, each in (0, 1), got {text!r}")
    return values


def _search_settings(run: Path) -> RunSettings:
    """The search settings of the run's study, empty when there is no readable single study."""
    from nas.run.open import RunError, open_run

    try:
        return open_run(run).settings
    except RunError:
        return RunSettings()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    importances = tuple(part.strip() for part in args.importance.split(",") if part.strip())
    unknown = [i for i in importances if i not in IMPORTANCES]
    if not importances or unknown:
        parser.error(f"--importance must be among {', '.join(IMPORTANCES)}, got {args.importance!r}")
    if args.distill and args.finetune_epochs == 0:
        parser.error("--distill needs --finetune-epochs >= 1")

    from nas.deploy.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_info
    from nas.deploy.export import checkpoint_spatial_dims

    if args.run is not None:
        run = Path(args.run)
        if not run.is_dir():
            parser.error(f"--run {args.run}: no such run directory")
        folders = sorted(p for p in (run / "best").glob("*") if p.is_dir())
        if not folders:
            parser.error(f"--run {args.run}: no checkpoints in {run / 'best'} (run nas-search first)")
    else:
        folders = [Path(args.checkpoint)]
        run = folders[0].resolve().parent.parent  # <run>/best/trial_N or <run>/trials/trial_N
    for folder in folders:
        try:
            load_checkpoint(folder)
        except (CheckpointError, OSError) as error:
            parser.error(str(error))
    settings = _search_settings(run)
    source = args.data or settings.data
    if source is None:
        parser.error("no data source: the run has no readable study (study.db or study.journal); pass --data")
    out = Path(args.out) if args.out is not None else run / "compressed"
    inputs = [(f"the checkpoint folder {folder}", folder) for folder in folders]
    if not str(source).startswith("synthetic"):
        inputs.append((f"the data folder {source}", Path(str(source))))
    check_output(parser, "--out", args.out if args.out is not None else out, inputs=inputs, mine=("compressed",))
    image_size = args.image_size or settings.image_size or 64
    seed = args.seed if args.seed is not None else settings.seed or 0
    dims = max(checkpoint_spatial_dims(read_checkpoint_info(folder).space) for folder in folders)
    check_pixels(parser, [image_size] * dims, args.batch_size)

    from nas.data.loading import DataError, load_data
    from nas.train.trainer import TrainConfig

    from compress.index import write_index
    from compress.pipeline import CompressOptions, compress_checkpoint

    try:
        data = load_data(str(source), image_size=image_size, seed=seed,
                         num_classes=settings.num_classes)  # label maps: the class count the search had
    except (DataError, ValueError, OSError) as error:
        parser.error(f"--data {source}: {error}")
    for folder in folders:  # a model takes one channel count and one dimensionality: refuse before any write
        info = read_checkpoint_info(folder)
        if info.in_channels != data.in_channels:
            parser.error(f"--data {source}: {data.in_channels} channel(s), but {folder} takes {info.in_channels}")
        if checkpoint_spatial_dims(info.space) != data.spatial_dims:
            parser.error(f"--data {source}: {data.spatial_dims}D data, but {folder} is a "
                         f"{checkpoint_spatial_dims(info.space)}D model")
    check_writable(parser, "--out", out, folder=True)
    options = CompressOptions(
        ratios=args.ratios, importances=importances, ratio_of=args.ratio_of, global_pruning=args.global_pruning,
        iterative_steps=args.iterative_steps, round_to=args.round_to, finetune_epochs=args.finetune_epochs,
        distill=args.distill, distill_weight=args.distill_weight, distill_loss=args.distill_loss,
        max_dice_drop=args.max_dice_drop, quantize=not args.no_quantize, image_size=image_size,
        train=TrainConfig(batch_size=args.batch_size, lr=args.lr, seed=seed))
    entries = []
    try:
        for folder in folders:
            entries += compress_checkpoint(folder, data, out, options, run_dir=run)
        index = write_index(run, entries) if out.resolve() == (run / "compressed").resolve() else None
    except OSError as error:  # disk full, folder made read-only meanwhile: variants written so far stay whole
        return write_failed(PROG, error)
    kept = sum(e["kept"] for e in entries)
    print(f"nas-compress: {len(entries)} variant(s), {kept} kept -> {out}" + (f" (index {index})" if index else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
