"""``nas-compress``: prune, fine-tune (optionally distil), gate and quantize a run's Pareto checkpoints.

``--run DIR`` compresses every ``DIR/best/*`` checkpoint and writes ``DIR/compressed/<variant>/`` plus
``DIR/compressed/compressed.json``; ``--checkpoint FOLDER`` compresses one (output beside it in
``<FOLDER>/../../compressed``, the run's ``compressed/`` for a ``best/`` or
``trials/`` checkpoint, unless ``--out``). The data split is rebuilt from the run's study
(``search_config``: data, image size, seed) unless ``--data`` is given. Bad input ends with one line
and exit code 2 before anything is written.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from compress.prune import IMPORTANCES, RATIO_OF


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nas-compress",
        description="Channel-prune, fine-tune and quantize the Pareto checkpoints of a nas-search run.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="run directory of nas-search (its best/* checkpoints are compressed)")
    source.add_argument("--checkpoint", help="one checkpoint folder (spec.json + model.safetensors)")
    parser.add_argument("--out", default=None, help="output folder (default: <run>/compressed)")
    parser.add_argument("--data", default=None,
                        help="data source (default: the run's, read from its study.db)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="patch / cost input side (default: the run's, else 64)")
    parser.add_argument("--seed", type=int, default=None, help="data split seed (default: the run's, else 0)")
    parser.add_argument("--ratios", default="0.5",
                        help="comma-separated shares to remove, each in (0, 1), e.g. 0.25,0.5")
    parser.add_argument("--ratio-of", choices=RATIO_OF, default="macs",
                        help="the ratio is a share of MACs (reached by bisection) or of channels per layer")
    parser.add_argument("--importance", default="magnitude",
                        help=f"comma-separated channel importance criteria: {', '.join(IMPORTANCES)}")
    parser.add_argument("--global-pruning", action="store_true",
                        help="rank channels across layers instead of the same share per layer")
    parser.add_argument("--iterative-steps", type=int, default=1, help="pruning steps to reach each ratio")
    parser.add_argument("--round-to", type=int, default=8,
                        help="kept channel counts are multiples of this (1: no rounding)")
    parser.add_argument("--finetune-epochs", type=int, default=2, help="fine-tuning epochs after pruning (0: none)")
    parser.add_argument("--distill", action="store_true",
                        help="distil from the unpruned model while fine-tuning (task loss + weight x logit loss)")
    parser.add_argument("--distill-weight", type=float, default=1.0, help="weight of the distillation loss")
    parser.add_argument("--distill-loss", choices=("mse", "kl"), default="mse", help="distillation loss on logits")
    parser.add_argument("--max-dice-drop", type=float, default=None,
                        help="keep only variants losing at most this many Dice points (100 x Dice)")
    parser.add_argument("--no-quantize", action="store_true",
                        help="skip the fp32/fp16/int8 ONNX exports and their measurements")
    parser.add_argument("--batch-size", type=int, default=8, help="fine-tuning batch size")
    parser.add_argument("--lr", type=float, default=3e-3,
                        help="peak fine-tuning learning rate (warm-up, cosine decay; 1e-3 recovered less in 2 epochs)")
    return parser


def _floats(parser: argparse.ArgumentParser, text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        parser.error(f"--ratios must be comma-separated numbers, got {text!r}")
    if not values or any(not 0.0 < v < 1.0 for v in values):
        parser.error(f"--ratios must each be in (0, 1), got {text!r}")
    return values


def _search_config(run: Path) -> dict[str, Any]:
    """``search_config`` of the run's study, or {} when there is no readable single study."""
    import optuna

    from nas.engine.optuna_adapter.study import CONFIG_ATTR, make_storage, run_storage

    url = run_storage(run)
    if url is None:
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        storage = make_storage(url)
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        if len(names) != 1:
            return {}
        return dict(optuna.load_study(study_name=names[0], storage=storage).user_attrs.get(CONFIG_ATTR) or {})
    except Exception:
        return {}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    ratios = _floats(parser, args.ratios)
    importances = tuple(part.strip() for part in args.importance.split(",") if part.strip())
    unknown = [i for i in importances if i not in IMPORTANCES]
    if not importances or unknown:
        parser.error(f"--importance must be among {', '.join(IMPORTANCES)}, got {args.importance!r}")
    for flag, value, low in (("--iterative-steps", args.iterative_steps, 1), ("--round-to", args.round_to, 1),
                             ("--finetune-epochs", args.finetune_epochs, 0), ("--batch-size", args.batch_size, 1)):
        if value < low:
            parser.error(f"{flag} must be >= {low}, got {value}")
    if args.max_dice_drop is not None and args.max_dice_drop < 0:
        parser.error(f"--max-dice-drop must be >= 0 points, got {args.max_dice_drop:g}")
    if args.distill and args.finetune_epochs == 0:
        parser.error("--distill needs --finetune-epochs >= 1")

    from nas.deploy.checkpoint import CheckpointError, load_checkpoint

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
    config = _search_config(run)
    source = args.data or config.get("data")
    if source is None:
        parser.error("no data source: the run has no readable study (study.db or study.journal); pass --data")
    image_size = args.image_size or int(config.get("image_size") or 64)
    seed = args.seed if args.seed is not None else int(config.get("seed") or 0)
    if image_size < 8:
        parser.error(f"--image-size must be >= 8, got {image_size}")

    from nas.data.loading import DataError, load_data
    from nas.train.trainer import TrainConfig

    from compress.index import write_index
    from compress.pipeline import CompressOptions, compress_checkpoint

    try:
        data = load_data(str(source), image_size=image_size, seed=seed)
    except (DataError, ValueError, OSError) as error:
        parser.error(f"--data {source}: {error}")
    out = Path(args.out) if args.out else run / "compressed"
    from nas.io import unwritable

    problem = unwritable(out, folder=True)
    if problem:
        parser.error(f"--out {out}: {problem}")
    options = CompressOptions(
        ratios=ratios, importances=importances, ratio_of=args.ratio_of, global_pruning=args.global_pruning,
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
        print(f"nas-compress: error: {error}", file=sys.stderr, flush=True)
        return 1
    kept = sum(e["kept"] for e in entries)
    print(f"nas-compress: {len(entries)} variant(s), {kept} kept -> {out}" + (f" (index {index})" if index else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
