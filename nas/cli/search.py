"""``nas-search``: search a space, write the trial table, the Pareto checkpoints and the report.

Flags -> checks -> ``SearchConfig`` -> ``nas.run.search.run_search``. Every input is checked before
anything is written: bad input ends with one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from typing import Sequence

from search_spaces import get_space, list_spaces
from search_spaces.overrides import NAMED_CONFIGS

from nas.cli.final_flags import add_final_flags
from nas.cli.common import (Parser, add_batch_size, add_device, add_image_size, add_out, add_seed, add_storage, die,
                            number, write_failed)
from nas.engine.job import SAMPLERS
from nas.run.search_config import LIMITS, RECIPE_FIELDS, SWITCHES, SearchConfig, SearchError

PROG = "nas-search"
D = SearchConfig()  # the defaults
EXIT_CODES = {"completed": 0, "timeout": 0, "exhausted": 0, "failures": 1, "infeasible": 1,
              "interrupted": 130, "terminated": 143, "storage": 1}  # storage: disk full or read-only mid-run
RECIPE_HELP = {
    "lr": "peak learning rate (Adam; linear warm-up, then cosine decay)",
    "warmup_fraction": "share of the steps spent warming up",
    "early_stop_patience": "stop a trial after N epochs without a better val Dice",
    "foreground_fraction": "share of training patches centred on a foreground pixel (0.5 suits sparse real data)",
    "brightness": "augmentation: +- shift of [0, 1] intensities per patch",
    "contrast": "augmentation: +- relative gain about the patch mean",
    "elastic": "augmentation: max elastic displacement in px (2D; 0 = off)",
    "aux_weight": "weight of each deep-supervision loss",
    "amp": "no autocast on CUDA (default: bf16, or fp16 with a gradient scaler)",
    "cpu_bf16": "bf16 autocast for training forwards on CPU",
    "channels_last": "channels-last memory format for model and batches",
    "grad_checkpointing": "recompute encoder/decoder stages in backward (less memory)",
}


def _num(name: str):
    return number(LIMITS[name])


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description="Search ResUNet architectures for Dice vs MACs; writes trials.csv, "
                                           "best/ and report.html.")
    parser.add_argument("--space", default=D.space, help=f"search space ({', '.join(list_spaces())})")
    parser.add_argument("--list-spaces", action="store_true", help="print the known spaces and exit")
    parser.add_argument("--data", default=D.data,
                        help="'synthetic' (default) or a folder with images/ and masks/ (same stems)")
    parser.add_argument("--trials", type=_num("trials"), default=D.trials, metavar="N",
                        help="finished trials wanted; a rerun on the same --out runs only the missing ones")
    parser.add_argument("--epochs", type=_num("epochs"), default=D.epochs, metavar="N",
                        help="training epochs per trial")
    add_image_size(parser, LIMITS["image_size"], default=D.image_size,
                   help="training patch side in px; also the input size MACs and latency are measured at")
    add_batch_size(parser, default=D.batch_size, help="training batch size")
    add_out(parser, help="run directory (default: runs/<space>-<data name>)")
    add_storage(parser, storage_help="Optuna storage URL (default: sqlite:///<out>/study.db)",
                name_help="study name (default: the space name)")
    add_seed(parser, default=D.seed, help="seed for data, sampler and training (0 .. 2^32-1)")
    parser.add_argument("--search-seed", type=_num("search_seed"), default=D.search_seed, metavar="S",
                        help="seed for the sampler and the cost strata only (default: --seed): another search "
                             "on the same split, with the same training seed")
    add_device(parser)
    engine = parser.add_argument_group("search engine")
    engine.add_argument("--objectives", default=D.objectives, metavar="QUALITY,COST[,COST]",
                        help="what to optimise: a quality measure (dice, miou, dice_small = Dice of objects under "
                             "8 px, hd95 (minimised) or dice:<class name>) and one or two of macs, latency, params, "
                             "memory (training-step MB), e.g. dice,latency or dice_small,macs (default dice,macs)")
    engine.add_argument("--sampler", default=D.sampler, choices=SAMPLERS,
                        help="Optuna multi-objective sampler, seeded by --search-seed, else --seed (default tpe)")
    engine.add_argument("--early-stop", default=D.early_stop, choices=("halving", "moasha", "none", "on", "off"),
                        help="at each rung stop a trial whose Dice so far is beaten: halving = by most trials that "
                             "cost no more (cost-aware successive halving); moasha = it is on a non-dominated front "
                             "of (Dice, costs) behind more than 1/3 of the trials (MO-ASHA); none; on/off = "
                             f"halving/none (default {D.early_stop})")
    engine.add_argument("--early-stop-rungs", default="", metavar="E[,E]",
                        help="epochs after which --early-stop decides, below --epochs, e.g. 3 or 3,6 "
                             "(default: 1, 3, 9, ... below --epochs)")
    engine.add_argument("--timeout", type=_num("timeout"), default=None, metavar="SECONDS",
                        help="wall-clock budget: no new trial starts after it (the running ones finish)")
    engine.add_argument("--max-failures", type=_num("max_failures"), default=D.max_failures, metavar="N",
                        help="end the search after N failed trials (exceptions, NaN losses, out of memory)")
    engine.add_argument("--workers", type=_num("workers"), default=D.workers, metavar="N",
                        help="N processes of this machine share the study (one GPU each when there are "
                             "several; a journal file is the default storage then)")
    engine.add_argument("--backend", default=D.backend, choices=("optuna", "ray"),
                        help="optuna: trials in this process (or --workers processes); ray: Ray Tune runs them "
                             "(pip install .[ray])")
    engine.add_argument("--ray-address", default=None, metavar="auto|HOST:PORT",
                        help="with --backend ray: join this Ray cluster (default: start Ray on this machine); a "
                             "head started with `ray start --head` wants RAY_AUTH_MODE=token in the environment")
    engine.add_argument("--latency-engine", default=D.latency_engine, choices=("torch", "onnxruntime"),
                        help="what the latency objective and --max-latency-ms measure: torch (eager, on --device) "
                             "or onnxruntime (the exported model on ONNX Runtime's CPU, as deployed); default torch")
    engine.add_argument("--gpus-per-trial", type=_num("gpus_per_trial"), default=None, metavar="G",
                        help="with --backend ray: GPUs per trial, may be fractional (default 1 with CUDA, else 0)")
    engine.add_argument("--cpus-per-trial", type=_num("cpus_per_trial"), default=D.cpus_per_trial, metavar="C",
                        help="with --backend ray: CPUs per trial (default 1)")
    parser.add_argument("--baselines", default=",".join(D.baselines), metavar="family|none|PRESET[,PRESET]",
                        help="also train these with the same data and recipe, as reference points in the report: "
                             "family = the baseline family (resunet-standard and unet-16 scaled to the search's MAC "
                             "range; with --warm-start family its members are study trials, nothing more is "
                             "trained), presets by name "
                             "(nas-profile --list-presets), e.g. family,mobile-resunet; none (default family)")
    parser.add_argument("--warm-start", default=D.warm_start, choices=("family", "none"),
                        help="family: queue the baseline family's points of the space as the study's first trials "
                             "(they count toward --trials, are never stopped early; optuna backend only); none "
                             f"(default {D.warm_start})")
    parser.add_argument("--family-rungs", type=_num("family_rungs"), default=D.family_rungs, metavar="N",
                        help=f"MAC targets per family design (default {D.family_rungs})")
    parser.add_argument("--cost-strata", type=_num("cost_strata"), default=D.cost_strata, metavar="N",
                        help="queue N first trials, one uniform draw per band of the space's log-MACs, with the "
                             "warm start, cheapest first, before the sampler takes over; 0: none "
                             f"(default {D.cost_strata}; docs/search_engine.md)")
    add_final_flags(parser.add_argument_group("the finalist stage after the trials (nas-finalize runs it alone)"),
                    finalists_default=D.finalists,
                    finalists_help="retrain at most K Pareto members (spread along the front) and the baselines "
                                   "for --final-epochs with --final-seeds seeds; test Dice with 95 %% CIs "
                                   "(default 0: none)")
    _add_recipe_arguments(parser)
    space = parser.add_argument_group("restricting the space (part of the study's settings: a resume must match)")
    space.add_argument("--describe", action="store_true",
                       help="print the space's dimensions, their values and the active restrictions, and exit")
    space.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE",
                       help="fix a dimension to one value (repeatable), e.g. --fix depth=4")
    space.add_argument("--choices", action="append", default=[], metavar="NAME=V1,V2",
                       help="allow only these values of a dimension (repeatable), e.g. --choices depth=3,4")
    space.add_argument("--config", dest="space_config", default=None, metavar="FILE.toml",
                       help="a TOML file with [fix] and [choices] tables, or a built-in name "
                       f"({', '.join(NAMED_CONFIGS)}); --fix/--choices override its entries")
    limits = parser.add_argument_group("constraints checked before training (violators are pruned as infeasible)")
    limits.add_argument("--max-params", type=_count("max_params"), default=None, metavar="N", help="most parameters, e.g. 500k, 2M")
    limits.add_argument("--max-macs", type=_count("max_macs"), default=None, metavar="N",
                        help="most MACs of one batch-1 forward at --image-size, e.g. 500M, 2G")
    limits.add_argument("--max-latency-ms", type=_num("max_latency_ms"), default=None, metavar="MS",
                        help="slowest median batch-1 forward at --image-size on the search device")
    limits.add_argument("--max-memory-mb", type=_num("max_memory_mb"), default=None, metavar="MB",
                        help="most memory of one training step at --batch-size and --image-size: saved "
                             "activations + params, grads and Adam state (MB = 2^20 bytes)")
    limits.add_argument("--max-pruned-in-a-row", type=_num("max_pruned_in_a_row"), default=D.max_pruned_in_a_row,
                        metavar="N", help="stop once N sampled architectures in a row are pruned (infeasible or "
                                          f"duplicates): the limits or the restricted space leave nothing new "
                                          f"(default {D.max_pruned_in_a_row})")
    return parser


def _count(name: str):
    """An argparse type for ``500k``, ``2M``, ``1.5G``: a positive count within the limits of ``--name``."""
    def parse(text: str) -> int:
        from nas.costs.constraints import parse_count

        try:
            value = parse_count(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"expected a positive number with an optional k/M/G/T suffix "
                                             f"(500M, 2G), got {text!r}") from None
        problem = LIMITS[name].problem(value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = "count"
    return parse


def _add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training recipe (part of the study's settings: a resume must match)")
    group.add_argument("--val-fraction", type=_num("val_fraction"), default=D.val_fraction, metavar="F",
                       help="share of images held out for validation when the data has no val/ folder")
    group.add_argument("--test-fraction", type=_num("test_fraction"), default=D.test_fraction, metavar="F",
                       help="share of images held out as a test split (never used for selection) when the folder "
                            "has no test/ (default: 0.2 from 10 images on, else none)")
    group.add_argument("--num-classes", type=_num("num_classes"), default=D.num_classes, metavar="K",
                       help="classes of label-map masks, background (0) included: 2 = binary, K >= 3 = masks holding "
                            "0..K-1 (default: found from the data or its classes.json)")
    group.add_argument("--class-weights", default="", metavar="W0,W1,...",
                       help="label maps: weight of each class (background first) in the focal loss, one per class, "
                            "e.g. 0.5,1,4,2 (default: all 1)")
    group.add_argument("--patches-per-epoch", type=_num("patches_per_epoch"), default=D.patches_per_epoch,
                       metavar="N", help="training patches per epoch (default: the training images' area once, "
                                         "at least one patch per image)")
    for name in RECIPE_FIELDS:
        if name in SWITCHES:
            group.add_argument(SWITCHES[name], dest=name, action="store_const", const=not getattr(D, name),
                               default=getattr(D, name), help=RECIPE_HELP[name])
        else:
            group.add_argument("--" + name.replace("_", "-"), dest=name, type=_num(name), default=getattr(D, name),
                               help=f"{RECIPE_HELP[name]} (default: {getattr(D, name)})")


def config_from_args(args: argparse.Namespace) -> SearchConfig:
    """The parsed flags as a ``SearchConfig`` (each field's dest is its name; ``worker_id`` is no flag:
    ``nas.run.search`` sets it in the configs of its worker processes)."""
    return SearchConfig(**{item.name: getattr(args, item.name) for item in fields(SearchConfig)
                           if item.name != "worker_id"})


def _describe(space, restriction, constraints) -> str:
    from search_spaces.overrides import describe_dimensions

    lines = [f"{space.name}: {space.description}", "", *describe_dimensions(space.dimensions, restriction), ""]
    active = [f"--fix {k}={v}" for k, v in restriction.fixed.items()]
    active += [f"--choices {k}={','.join(map(str, v))}" for k, v in restriction.choices.items()]
    lines.append("restrictions: " + (" ".join(active) if active else "none (the whole space is searched)"))
    lines.append("constraints: " + (", ".join(constraints.describe()) or "none"))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_spaces:
        for name in list_spaces():
            print(f"{name}: {get_space(name).description}")
        return 0
    from nas.run.search_plan import resolve_space

    try:
        config = config_from_args(args)
        if args.describe:
            print(_describe(*resolve_space(config)))
            return 0
        from nas.run.search import run_search  # loads Optuna: not for --describe

        result = run_search(config)
    except SearchError as error:
        die(PROG, error)
    except OSError as error:  # disk full, folder made read-only meanwhile: one line, the study intact
        return write_failed(PROG, error)
    return EXIT_CODES[result.status]


if __name__ == "__main__":
    sys.exit(main())
