"""``nas-search``: search a space, write the trial table, the Pareto checkpoints and the report.

Every input is checked before anything is written: bad input ends with one line on stderr
and exit code 2.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from search_spaces import get_space, list_spaces
from search_spaces.overrides import (OverrideError, Restriction, RestrictedSuggest, RestrictionConflict,
                                     check_restriction, describe_dimensions, restriction_from_args)

from nas.costs.constraints import Constraints, parse_count
from nas.data.loading import DataError, check_data_source, load_data
from nas.engine.job import SAMPLERS
from nas.engine.objectives import Objectives
from nas.train.trainer import TrainConfig, resolve_device


MAX_PRUNED_IN_A_ROW = 25  # default of --max-pruned-in-a-row (= nas.engine.optuna_adapter.study.MAX_DUPLICATES_IN_A_ROW)
DEFAULTS = dict(data="synthetic", trials=20, epochs=10, image_size=64, seed=0, device="auto",
                batch_size=8)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nas-search",
        description="Search ResUNet architectures for Dice vs MACs; writes trials.csv, best/ and report.html.",
    )
    parser.add_argument("--space", default="resunet", help=f"search space ({', '.join(list_spaces())})")
    parser.add_argument("--list-spaces", action="store_true", help="print the known spaces and exit")
    parser.add_argument("--data", default=DEFAULTS["data"],
                        help="'synthetic' (default) or a folder with images/ and masks/ (same stems)")
    parser.add_argument("--trials", type=int, default=DEFAULTS["trials"],
                        help="finished trials wanted; a rerun on the same --out runs only the missing ones")
    parser.add_argument("--epochs", type=int, default=DEFAULTS["epochs"], help="training epochs per trial")
    parser.add_argument("--image-size", type=int, default=DEFAULTS["image_size"],
                        help="training patch side in px; also the input size MACs and latency are measured at")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"], help="training batch size")
    parser.add_argument("--out", default=None, help="run directory (default: runs/<space>-<data name>)")
    parser.add_argument("--storage", default=None,
                        help="Optuna storage URL (default: sqlite:///<out>/study.db)")
    parser.add_argument("--study-name", default=None, help="study name (default: the space name)")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="seed for data, sampler and training")
    parser.add_argument("--device", default=DEFAULTS["device"], help="auto (CUDA when present), cpu or cuda")
    engine = parser.add_argument_group("search engine")
    engine.add_argument("--objectives", default=str(Objectives()), metavar="dice,COST[,COST]",
                        help="what to optimise: dice and one or two of macs, latency, params, memory "
                             "(training-step MB), e.g. dice,latency or dice,macs,memory (default dice,macs)")
    engine.add_argument("--sampler", default="tpe", choices=SAMPLERS,
                        help="Optuna multi-objective sampler, seeded by --seed (default tpe)")
    engine.add_argument("--early-stop", default="on", choices=("on", "off"),
                        help="cost-aware successive halving: at epochs 1, 3, 9, ... stop a trial whose Dice is "
                             "beaten by most trials that cost no more (default on)")
    engine.add_argument("--timeout", type=_positive_float, default=None, metavar="SECONDS",
                        help="wall-clock budget: no new trial starts after it (the running ones finish)")
    engine.add_argument("--max-failures", type=int, default=5, metavar="N",
                        help="end the search after N failed trials (exceptions, NaN losses, out of memory)")
    engine.add_argument("--workers", type=int, default=1, metavar="N",
                        help="N processes of this machine share the study (one GPU each when there are "
                             "several; a journal file is the default storage then)")
    engine.add_argument("--worker-id", type=int, default=None, help=argparse.SUPPRESS)
    engine.add_argument("--backend", default="optuna", choices=("optuna", "ray"),
                        help="optuna: trials in this process (or --workers processes); ray: Ray Tune runs them "
                             "(pip install .[ray])")
    engine.add_argument("--ray-address", default=None, metavar="auto|HOST:PORT",
                        help="with --backend ray: join this Ray cluster (default: start Ray on this machine)")
    engine.add_argument("--gpus-per-trial", type=float, default=None, metavar="G",
                        help="with --backend ray: GPUs per trial, may be fractional (default 1 with CUDA, else 0)")
    engine.add_argument("--cpus-per-trial", type=float, default=1.0, metavar="C",
                        help="with --backend ray: CPUs per trial (default 1)")
    parser.add_argument("--baselines", default="", metavar="PRESET[,PRESET]",
                        help="also train these presets with the same data and recipe, as reference points "
                             "in the report (nas-profile --list-presets names them)")
    _add_recipe_arguments(parser)
    space = parser.add_argument_group("restricting the space (part of the study's settings: a resume must match)")
    space.add_argument("--describe", action="store_true",
                       help="print the space's dimensions, their values and the active restrictions, and exit")
    space.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE",
                       help="fix a dimension to one value (repeatable), e.g. --fix depth=4")
    space.add_argument("--choices", action="append", default=[], metavar="NAME=V1,V2",
                       help="allow only these values of a dimension (repeatable), e.g. --choices depth=3,4")
    space.add_argument("--config", default=None, metavar="FILE.toml",
                       help="a TOML file with [fix] and [choices] tables; --fix/--choices override its entries")
    limits = parser.add_argument_group("constraints checked before training (violators are pruned as infeasible)")
    limits.add_argument("--max-params", type=_count, default=None, metavar="N",
                        help="most parameters, e.g. 500k, 2M")
    limits.add_argument("--max-macs", type=_count, default=None, metavar="N",
                        help="most MACs of one batch-1 forward at --image-size, e.g. 500M, 2G")
    limits.add_argument("--max-latency-ms", type=_positive_float, default=None, metavar="MS",
                        help="slowest median batch-1 forward at --image-size on the search device")
    limits.add_argument("--max-memory-mb", type=_positive_float, default=None, metavar="MB",
                        help="most memory of one training step at --batch-size and --image-size: saved "
                             "activations + params, grads and Adam state (MB = 2^20 bytes)")
    limits.add_argument("--max-pruned-in-a-row", type=int, default=MAX_PRUNED_IN_A_ROW, metavar="N",
                        help="stop once N sampled architectures in a row are pruned (infeasible or "
                             f"duplicates): the limits or the restricted space leave nothing new (default "
                             f"{MAX_PRUNED_IN_A_ROW})")
    return parser


def _count(text: str) -> int:
    try:
        return parse_count(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _restriction(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Restriction:
    """The checked restriction of the chosen space, or a one-line error (exit 2)."""
    space = get_space(args.space)
    try:
        restriction = restriction_from_args(space.dimensions, args.fix, args.choices, args.config)
        check_restriction(space.sample_spec, restriction, space.dimensions)
    except OverrideError as error:
        parser.error(str(error))
    return restriction


def _describe(space: Any, restriction: Restriction, constraints: Constraints) -> str:
    lines = [f"{space.name}: {space.description}", "", *describe_dimensions(space.dimensions, restriction), ""]
    active = [f"--fix {k}={v}" for k, v in restriction.fixed.items()]
    active += [f"--choices {k}={','.join(map(str, v))}" for k, v in restriction.choices.items()]
    lines.append("restrictions: " + (" ".join(active) if active else "none (the whole space is searched)"))
    lines.append("constraints: " + (", ".join(constraints.describe()) or "none"))
    return "\n".join(lines)


def _check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    try:
        get_space(args.space)
        check_data_source(args.data)
        resolve_device(args.device)
    except (ValueError, DataError) as error:
        parser.error(str(error))
    for name, minimum in (("trials", 1), ("epochs", 1), ("batch_size", 1), ("image_size", 16),
                          ("max_pruned_in_a_row", 1), ("max_failures", 1), ("workers", 1)):
        if getattr(args, name) < minimum:
            parser.error(f"--{name.replace('_', '-')} must be >= {minimum}, got {getattr(args, name)}")
    if args.baselines:
        from search_spaces.presets import get_preset

        try:
            for name in args.baselines.split(","):
                get_preset(name.strip())
        except ValueError as error:
            parser.error(f"--baselines: {error}")
    if not 0 < args.val_fraction < 1:
        parser.error(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
    for name in ("lr", "warmup_fraction", "foreground_fraction", "brightness", "contrast", "elastic",
                 "aux_weight"):
        if getattr(args, name) < 0 or (name.endswith("fraction") and getattr(args, name) > 1):
            parser.error(f"--{name.replace('_', '-')} out of range: {getattr(args, name)}")
    if args.early_stop_patience is not None and args.early_stop_patience < 1:
        parser.error(f"--early-stop-patience must be >= 1, got {args.early_stop_patience}")
    if args.out is not None:
        from nas.io import unwritable

        problem = unwritable(Path(args.out), folder=True)
        if problem:
            parser.error(f"--out {args.out}: {problem}")
    if not args.lr > 0:
        parser.error(f"--lr must be > 0, got {args.lr}")
    if args.storage is not None and "://" not in args.storage:
        parser.error(f"--storage must be a URL such as sqlite:///path/study.db, got {args.storage!r}")
    if args.workers > 1 and args.storage and args.storage.startswith("sqlite"):
        parser.error("--workers > 1 needs a storage that takes several writers: leave --storage out "
                     "(a journal file), or use journal:///path or postgresql://...")
    try:
        Objectives.parse(args.objectives)
    except ValueError as error:
        parser.error(f"--objectives: {error}")
    if args.backend == "ray":
        if args.workers > 1:
            parser.error("--workers and --backend ray do not mix: Ray runs the trials in parallel itself")
        from nas.engine.ray_adapter import check_ray_backend

        try:
            check_ray_backend(args.device, _gpus_per_trial(args), args.cpus_per_trial)
        except (RuntimeError, ValueError) as error:
            parser.error(str(error))


# Training-recipe flags: (flag, TrainConfig field, type, help). Each one that differs from its
# default joins the study's settings, so a resume with another recipe is refused.
RECIPE = TrainConfig()
RECIPE_FLAGS = (
    ("--lr", "lr", float, "peak learning rate (Adam; linear warm-up, then cosine decay)"),
    ("--warmup-fraction", "warmup_fraction", float, "share of the steps spent warming up"),
    ("--early-stop-patience", "early_stop_patience", int, "stop a trial after N epochs without a better val Dice"),
    ("--foreground-fraction", "foreground_fraction", float,
     "share of training patches centred on a foreground pixel (0.5 suits sparse real data)"),
    ("--brightness", "brightness", float, "augmentation: +- shift of [0, 1] intensities per patch"),
    ("--contrast", "contrast", float, "augmentation: +- relative gain about the patch mean"),
    ("--elastic", "elastic", float, "augmentation: max elastic displacement in px (2D; 0 = off)"),
    ("--aux-weight", "aux_weight", float, "weight of each deep-supervision loss"),
)
RECIPE_SWITCHES = (
    ("--no-amp", "amp", False, "no autocast on CUDA (default: bf16, or fp16 with a gradient scaler)"),
    ("--cpu-bf16", "cpu_bf16", True, "bf16 autocast for training forwards on CPU"),
    ("--channels-last", "channels_last", True, "channels-last memory format for model and batches"),
    ("--grad-checkpointing", "grad_checkpointing", True, "recompute encoder/decoder stages in backward (less memory)"),
)


def _add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training recipe (part of the study's settings: a resume must match)")
    group.add_argument("--val-fraction", type=float, default=0.25,
                       help="share of images held out for validation when the data has no val/ folder")
    for flag, field, kind, text in RECIPE_FLAGS:
        group.add_argument(flag, dest=field, type=kind, default=getattr(RECIPE, field),
                           help=f"{text} (default: {getattr(RECIPE, field)})")
    for flag, field, value, text in RECIPE_SWITCHES:
        group.add_argument(flag, dest=field, action="store_const", const=value,
                           default=getattr(RECIPE, field), help=text)


def _recipe(args: argparse.Namespace) -> tuple[TrainConfig, dict[str, Any]]:
    """The trial's TrainConfig, and the recipe settings that differ from the defaults."""
    fields = [f for _, f, *_ in RECIPE_FLAGS] + [f for _, f, *_ in RECIPE_SWITCHES]
    values = {f: getattr(args, f) for f in fields}
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, patch_size=args.image_size,
                         seed=args.seed, device=args.device, **values)
    changed = {f: v for f, v in values.items() if v != getattr(RECIPE, f)}
    if args.val_fraction != 0.25:
        changed["val_fraction"] = args.val_fraction
    return config, changed


def _data_name(source: str) -> str:
    """``isbi2012_em/train`` -> ``isbi2012_em-train``: a split folder alone says too little."""
    if source.startswith("synthetic"):
        return source.replace(":", "-")
    folder = Path(source).resolve()
    generic = folder.name.lower() in {"train", "training", "val", "valid", "validation", "test", "data"}
    return f"{folder.parent.name}-{folder.name}" if generic else folder.name


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_spaces:
        for name in list_spaces():
            print(f"{name}: {get_space(name).description}")
        return 0
    try:
        get_space(args.space)
    except ValueError as error:
        parser.error(str(error))
    space = get_space(args.space)
    restriction = _restriction(parser, args)
    constraints = Constraints(args.max_params, args.max_macs, args.max_latency_ms, args.max_memory_mb)
    if args.describe:
        print(_describe(space, restriction, constraints))
        return 0
    _check_arguments(parser, args)
    try:
        data = load_data(args.data, image_size=args.image_size, seed=args.seed, val_fraction=args.val_fraction)
    except DataError as error:
        parser.error(str(error))
    if data.spatial_dims != space.spatial_dims:
        kind = {2: "2D images", 3: "3D volumes"}
        parser.error(f"space {space.name!r} builds {kind[space.spatial_dims]} networks but --data "
                     f"{args.data!r} holds {kind[data.spatial_dims]}")
    train_config, recipe_changes = _recipe(args)

    try:
        return _run_search(args, argv, parser, space, restriction, constraints, data, train_config, recipe_changes)
    except OSError as error:  # disk full, folder made read-only meanwhile: one line, the study intact
        print(f"nas-search: error: {error}", file=sys.stderr, flush=True)
        return 1


def _run_search(args, argv, parser, space, restriction, constraints, data, train_config, recipe_changes) -> int:
    """Open (or resume) the study and run it: in this process, in ``--workers`` processes, or as one worker."""
    # Imported late: Optuna is only needed once the inputs are known to be good.
    from nas.engine.early_stop import RungPolicy
    from nas.engine.trial import TrialSettings
    from nas.engine.optuna_adapter.search import search
    from nas.engine.optuna_adapter.study import (StudyConfigError, count_finished, default_storage, open_study,
                               recover_lost_trials, study_records)
    from nas.run.outputs import write_run_outputs
    from nas.engine.run_lock import RunLocked, lock_run
    from nas.engine.job import LiveView, SearchJob

    objectives = Objectives.parse(args.objectives)
    out = Path(args.out or Path("runs") / f"{space.name}-{_data_name(args.data)}").resolve()
    storage = args.storage or default_storage(out, args.workers)
    study_name = args.study_name or space.name
    data_id = args.data if args.data.startswith("synthetic") else str(Path(args.data).resolve())
    study_config = {"space": space.name, "data": data_id, "epochs": args.epochs,
                    "image_size": args.image_size, "batch_size": args.batch_size, "seed": args.seed}
    if restriction:  # only when set, so studies made before restrictions existed still resume
        study_config["restriction"] = restriction.to_dict()
    if constraints:
        study_config["constraints"] = constraints.to_dict()
    if recipe_changes:
        study_config["recipe"] = recipe_changes
    for key, value, default in (("objectives", str(objectives), "dice,macs"), ("sampler", args.sampler, "tpe"),
                                ("early_stop", args.early_stop, "on")):
        if value != default:
            study_config[key] = value
    out.mkdir(parents=True, exist_ok=True)
    worker = args.worker_id is not None
    lock = None
    if not worker:
        try:
            lock = lock_run(out)
        except RunLocked as error:
            parser.error(str(error))
    try:
        # Each worker samples with its own seed: the same seed would propose the same architectures.
        sampler_seed = args.seed + 7919 * (args.worker_id + 1) if worker else args.seed
        study = open_study(storage, study_name, sampler_seed, study_config, objectives, args.sampler)
    except StudyConfigError as error:
        parser.error(str(error))
    own_storage = storage.endswith((str(out / "study.db"), str(out / "study.journal")))
    if not worker:
        from nas.io import clean_stale_writes

        for path in clean_stale_writes(out):
            print(f"cleaned up after an interrupted write: {path.relative_to(out)}", flush=True)
        for number in recover_lost_trials(study, local=own_storage):
            print(f"trial {number} was lost (killed or interrupted): queued again", flush=True)

    settings = TrialSettings(image_size=args.image_size, train=train_config,
                             measure_train_memory=objectives.needs_memory)
    job = SearchJob(space=space, data=data, settings=settings, out=out, trials=args.trials,
                    restriction=restriction, constraints=constraints, objectives=objectives,
                    early_stop=RungPolicy.for_epochs(args.epochs) if args.early_stop == "on" else None,
                    max_failures=args.max_failures, max_pruned_in_a_row=args.max_pruned_in_a_row,
                    timeout=args.timeout)
    already = count_finished(study)
    live = LiveView(out, args.trials, objectives, already)
    if worker:
        print(f"nas-search worker {args.worker_id} (pid {os.getpid()}): storage {storage}", flush=True)
        search(job, study)
        return 0
    print(f"nas-search: space {space.name}, data {data.name} ({len(data.train_images)} train / "
          f"{len(data.val_images)} val images, {data.in_channels} channel(s)), "
          f"device {resolve_device(args.device)}, {already}/{args.trials} trials finished, "
          f"objectives {objectives}, sampler {args.sampler}, early stop {args.early_stop}, "
          f"{args.workers} worker(s), out {out}", flush=True)

    interrupted = False
    stopped = None
    try:
        if args.workers > 1:
            from nas.engine.workers import run_workers

            stopped = run_workers(
                list(sys.argv[1:] if argv is None else argv), args.workers, storage, out,
                poll=lambda: live.update(study_records(study)),
                recover=lambda: recover_lost_trials(study, local=False),
                remaining=lambda: args.trials - count_finished(study), max_failures=args.max_failures,
                gpu_count=_gpu_count(args.device))
        elif args.backend == "ray":
            from nas.engine.ray_adapter import run_ray_search

            stopped = run_ray_search(job, study, storage=storage, study_name=study_name, seed=args.seed,
                                     sampler=args.sampler, ray_address=args.ray_address,
                                     gpus_per_trial=_gpus_per_trial(args), cpus_per_trial=args.cpus_per_trial,
                                     resume=True)
        else:
            stopped = search(job, study, live)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: writing the report of the finished trials", file=sys.stderr, flush=True)

    if args.baselines and not interrupted:
        from nas.engine.baselines import train_baselines

        try:
            train_baselines([n.strip() for n in args.baselines.split(",")], data, settings, out,
                            on_epoch=lambda e, loss, dice: print(f"    epoch {e}/{args.epochs}  loss {loss:.3f}  "
                                                                 f"val dice {dice:.3f}", flush=True))
        except KeyboardInterrupt:
            interrupted = True
            print("\ninterrupted: writing the report of the finished trials", file=sys.stderr, flush=True)

    records = study_records(study)
    live.update(records)
    config = {**study_config, "objectives": str(objectives), "trials": args.trials, "study": study_name,
              "storage": storage, "device": str(resolve_device(args.device)), "torch_threads": _threads()}
    front = write_run_outputs(records, out, title=f"nas-search: {space.name} on {data.name}", config=config)
    finished = sum(r.finished for r in records)
    print(f"\n{finished} finished trial(s); Pareto front ({' vs '.join(objectives.names)}):")
    for record in front.front:
        print(f"  trial {record.number:>3}  dice {record.dice:.3f}  {record.macs / 1e6:.1f} MMAC  "
              f"{record.latency_ms:.2f} ms  -> {out / 'best' / Path(record.checkpoint or '').name}")
    print(f"report: {out / 'report.html'}\ntable:  {out / 'trials.csv'}")
    if stopped == "timeout":
        print(f"nas-search: stopped: --timeout {args.timeout:g} s reached with {finished}/{args.trials} "
              "finished; the same command resumes", flush=True)
    if stopped == "failures":
        print(f"nas-search: stopped: {args.max_failures} trials failed (see fail_reason in trials.csv)",
              file=sys.stderr, flush=True)
        return 1
    if stopped == "pruned_in_a_row":
        return _explain_pruned_stop(records, args.max_pruned_in_a_row)
    return 130 if interrupted else 0


def _gpus_per_trial(args: argparse.Namespace) -> float:
    return args.gpus_per_trial if args.gpus_per_trial is not None else float(_gpu_count(args.device) > 0)


def _gpu_count(device: str) -> int:
    import torch

    return torch.cuda.device_count() if device in ("auto", "cuda") and torch.cuda.is_available() else 0


def _explain_pruned_stop(records: list, in_a_row: int) -> int:
    """Many pruned trials in a row: constraints no architecture meets (exit 1), or an exhausted space."""
    last = sorted(records, key=lambda r: r.number)[-in_a_row:]
    reasons = [r.fail_reason or "" for r in last if r.state == "PRUNED"]
    if reasons and all(reason.startswith("infeasible") for reason in reasons):
        print(f"nas-search: stopped: the last {len(reasons)} sampled architectures all violate the "
              f"constraints ({reasons[-1]}); no architecture of the (restricted) space may meet them: "
              "relax the --max-* limits or restrict the space to smaller architectures",
              file=sys.stderr, flush=True)
        return 1
    print("nas-search: stopped: the sampler keeps proposing architectures already trained "
          "(the restricted space looks exhausted)", flush=True)
    return 0


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    sys.exit(main())
