"""``nas-predict``: segment images of any size with a checkpoint (PyTorch or its ONNX file).

Every input is read and checked before anything is written: a missing input, an empty folder, an
unreadable image, a channel count the model does not take, an unwritable --out, an --out where
a mask would replace an input image (the input folder itself, a symlink to it, two outputs with one
name), or an --out on, in or around the input folder, the checkpoint, a data folder or a run's
``best/`` (``nas.run.places``) ends with one line and exit code 2; a write that fails midway (disk
full) ends with one line and exit code 1.
Masks are PNG with the input's stem: 0/255 for a binary model (its stored threshold), label maps
(value = class index, argmax) for a K-class one (docs/multiclass.md); overlays (``<stem>_overlay.png``)
tint the mask red, or each class in its colour. ``--threshold`` is for binary models only: with a
K-class model it is refused (exit 2). Images are processed one at a time, so memory is one image and
its logits.
A 3D model segments volumes (``.npy``, NIfTI) with cubic windows; each mask keeps its volume's
format (``nas.deploy.volume_predict``) and the overlay shows the middle slice. ``--onnx`` runs
``model.onnx`` only if its hash matches the one ``metrics.json`` recorded at export.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from nas.deploy.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_info
from nas.data.loading import IMAGE_SUFFIXES, DataError, _read_image
from nas.data.volumes import volume_suffix
from nas.deploy.export import INPUT_NAME, checked_onnx, checkpoint_spatial_dims, default_input_size
from nas.deploy.overlays import class_palette, model_classes
from nas.deploy.volume_predict import list_volumes, mask_name, segment_volume, volume_stem, write_volume_mask
from nas.train.inference import MAX_OVERLAP, Predictor, sliding_window_logits
from nas.cli.common import (Parser, add_batch_size, add_checkpoint, add_device, add_image_size, add_out, check_output,
                            check_pixels, check_writable, number, required, write_failed)
from nas.io import atomic_write_bytes, printable
from nas.run.limits import FRACTION, numbers, side_range
from nas.train.labels import labels_from_logits
from nas.train.trainer import resolve_device

OVERLAY_ALPHA = 0.5
BINARY_TINT = ((0, 0, 0), (255, 0, 0))  # background untouched, foreground red


PROG = "nas-predict"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description="Sliding-window segmentation of images of any size; writes PNG masks "
                                           "(0/255, or class indices for a K-class model), same stems.")
    add_checkpoint(parser)
    parser.add_argument("--input", required=True,
                        help="an image (PNG/JPEG/TIFF/BMP, grey or RGB) or a folder of them; for a 3D model a "
                             "volume (.npy, .nii, .nii.gz) or a folder of them (masks keep the volume's format)")
    add_out(parser, old=("--output",), help="folder for <stem>.png masks (required; created if needed; never the input's "
                                            "folder)")
    parser.add_argument("--threshold", type=number(FRACTION), default=None,
                        help="binary models only: foreground where sigmoid(logit) > T (default: the threshold "
                             "stored with the model, chosen on its validation images; 0.5 for models without one); "
                             "a K-class model takes the argmax and refuses it")
    parser.add_argument("--overlay", action="store_true",
                        help="also write <stem>_overlay.png (mask tinted red on the image; K classes: each class "
                             "in its colour)")
    add_image_size(parser, side_range(8), default=None, old=("--patch-size",),
                   help="window side in px (default: the size costs were measured at, from metrics.json; "
                        "a fixed-size ONNX model's own size)")
    parser.add_argument("--overlap", type=number(numbers(0, MAX_OVERLAP)), default=0.5,
                        help=f"fraction of a window shared with its neighbour, 0..{MAX_OVERLAP} (default 0.5)")
    add_batch_size(parser, default=4, help="windows per forward pass (default 4)")
    parser.add_argument("--onnx", action="store_true",
                        help="run the folder's model.onnx with onnxruntime instead of PyTorch")
    add_device(parser, help="auto (CUDA when present), cpu or cuda; ignored with --onnx")
    return parser


def list_inputs(source: Path) -> list[Path]:
    """The image itself, or the folder's image files sorted by name; ``DataError`` if none or duplicated stems."""
    if not source.exists():
        raise DataError(f"input {source} does not exist")
    if source.is_file():
        if source.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"input {source} is not an image ({', '.join(IMAGE_SUFFIXES)})")
        return [source]
    files = sorted(p for p in source.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no images in {source} (looked for {', '.join(IMAGE_SUFFIXES)})")
    stems: dict[str, Path] = {}
    for path in files:
        if path.stem in stems:
            first = stems[path.stem].name
            raise DataError(f"two files with the stem {path.stem!r} in {source}: {first}, {path.name}")
        stems[path.stem] = path
    return files


def onnx_predictor(path: Path) -> tuple[Predictor, tuple[int, int] | None]:
    """An onnxruntime session as a window predictor, and its fixed (H, W) if the export has one."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types for bad files
        raise CheckpointError(f"{path}: not a readable ONNX model ({str(error).splitlines()[0][:160]})") from None
    dims = session.get_inputs()[0].shape  # e.g. ['batch', 1, 'height', 'width'] or ['batch', 1, 64, 64]
    fixed = tuple(dims[2:]) if all(isinstance(d, int) for d in dims[2:]) else None  # (H, W) or (D, H, W)

    def predict(windows: torch.Tensor) -> torch.Tensor:
        array = windows.detach().cpu().numpy().astype(np.float32)  # (N, C, P, P)
        return torch.from_numpy(session.run(None, {INPUT_NAME: array})[0])  # (N, out, P, P)

    return predict, fixed


def overlay_png(image: np.ndarray, labels: np.ndarray, colours: Sequence[Sequence[int]] = BINARY_TINT) -> bytes:
    """``image`` (H, W, C) in [0, 1], ``labels`` (H, W) class indices -> RGB PNG with each foreground
    class tinted in ``colours[label]`` (binary: red)."""
    rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image[..., :3]  # (H, W, 3)
    tint = np.asarray(colours, dtype=np.float64)[np.clip(labels, 0, len(colours) - 1)] / 255.0  # (H, W, 3)
    mask = labels > 0
    tinted = rgb.copy()
    tinted[mask] = (1 - OVERLAY_ALPHA) * rgb[mask] + OVERLAY_ALPHA * tint[mask]
    return png_bytes((tinted * 255).round().clip(0, 255).astype(np.uint8))


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def output_files(inputs: list[Path], output: Path, overlay: bool) -> list[Path]:
    """What a run writes: ``<stem>.png`` per input, and ``<stem>_overlay.png`` with ``overlay``."""
    names = [(mask_name(path), volume_stem(path)) if volume_suffix(path)  # a volume's mask keeps its format
             else (f"{path.stem}.png", path.stem) for path in inputs]
    return [output / name for mask, stem in names for name in ((mask, f"{stem}_overlay.png") if overlay else (mask,))]


def overwrite_problem(source: Path, inputs: list[Path], output: Path, overlay: bool) -> str | None:
    """Why writing into ``output`` could replace an input image (or one output another), or None.

    Paths are compared resolved (symlinks followed), so a link to the input folder or to an input
    file counts as the same; for a single image, its folder is the input folder.
    """
    folder = (source if source.is_dir() else source.parent).resolve()
    if output.resolve() == folder:
        return f"--out {output} is the input folder {folder}: the masks would overwrite or mix with the images"
    sources = {path.resolve(): path for path in inputs}
    seen: dict[Path, Path] = {}
    for path in output_files(inputs, output, overlay):
        target = path.resolve()
        if target in sources:
            return f"--out {output}: {path.name} would overwrite the input image {sources[target]}"
        if target in seen:
            return f"--out {output}: two outputs would be named {path.name} (the stems collide)"
        seen[target] = path
    return None


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[list[Path], object]:
    """Everything that can be refused, before anything is written; returns (inputs, checkpoint info)."""
    output = Path(required(parser, args, "out", "--out"))
    if output.exists() and not output.is_dir():
        parser.error(f"--out {output} exists and is not a folder")
    check_writable(parser, "--out", output, folder=True)
    if args.image_size is not None:
        check_pixels(parser, [args.image_size] * 2, args.batch_size)
    try:
        info = read_checkpoint_info(args.checkpoint)
        if args.onnx:
            checked_onnx(args.checkpoint)  # missing, or not the file metrics.json vouches for: refused
        volumes = checkpoint_spatial_dims(info.space) == 3
        inputs = list_volumes(Path(args.input)) if volumes else list_inputs(Path(args.input))
    except (CheckpointError, DataError) as error:
        parser.error(str(error))
    if args.threshold is not None and model_classes(info) > 2:
        parser.error(f"--threshold is for binary models; {args.checkpoint} has {model_classes(info)} classes "
                     "and predicts the argmax")
    problem = overwrite_problem(Path(args.input), inputs, output, args.overlay)
    if problem:
        parser.error(problem)
    source = Path(args.input)
    check_output(parser, "--out", args.out, inputs=[
        (f"the input {'folder' if source.is_dir() else 'image'} {source}", source),
        (f"the checkpoint folder {args.checkpoint}", Path(args.checkpoint))])
    return inputs, info


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    inputs, info = _check(parser, args)
    try:
        if args.onnx:
            predictor, fixed = onnx_predictor(checked_onnx(args.checkpoint))
            device = "cpu"
        else:
            device = resolve_device(args.device)
            predictor, _ = load_checkpoint(args.checkpoint, device)
            fixed = None
        for path in inputs:  # decoded once to check, again below: memory holds one image at a time
            channels = _read_image(path).shape[-1]  # (H, W, C), or (D, H, W, C) for a volume
            if channels != info.in_channels:
                raise DataError(f"image {path} has {channels} channel(s) but the model takes {info.in_channels}")
    except ValueError as error:  # CheckpointError, DataError, an unknown or absent --device
        parser.error(str(error))
    patch = _patch_size(parser, args, info, fixed)

    try:
        _predict_all(args, inputs, info, predictor, device, patch)
    except OSError as error:  # disk full, folder made read-only meanwhile: masks written so far are whole
        return write_failed(PROG, error)
    return 0


def _predict_all(args: argparse.Namespace, inputs: list[Path], info, predictor, device,
                 patch: tuple[int, int]) -> None:
    """Segment every input and write its mask (and overlay), each file atomically."""
    output = Path(args.out)
    classes = model_classes(info)
    if classes > 2:
        palette = class_palette(info.metrics, classes)
        threshold, colours, scale = None, [colour for _, colour in palette], 1
        print(f"{classes} classes, label = argmax ({', '.join(f'{i} {name}' for i, (name, _) in enumerate(palette))})",
              flush=True)
    else:
        stored = info.metrics.get("threshold")
        threshold = args.threshold if args.threshold is not None else float(stored if stored is not None else 0.5)
        why = "--threshold" if args.threshold is not None else "stored with the model" if stored is not None else "none stored"
        print(f"threshold {threshold:g} ({why})", flush=True)
        colours, scale = BINARY_TINT, 255
    for path in inputs:
        if len(patch) == 3:  # a 3D model: cubic windows, the mask in the volume's own format
            volume, labels = segment_volume(path, predictor, info.normalization, patch_size=patch,
                                            overlap=args.overlap, batch_size=args.batch_size, device=device,
                                            threshold=threshold)
            write_volume_mask(path, labels, output / mask_name(path))
            if args.overlay:  # the middle slice
                atomic_write_bytes(output / f"{volume_stem(path)}_overlay.png",
                                   overlay_png(volume[len(labels) // 2], labels[len(labels) // 2], colours))
            print(f"{printable(path.name)}: {'x'.join(map(str, reversed(labels.shape)))}, {_shares(labels, classes)}",
                  flush=True)
            continue
        image = _read_image(path)  # (H, W, C) float32 in [0, 1]
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))  # (C, H, W)
        logits = sliding_window_logits(predictor, tensor, normalization=info.normalization, patch_size=patch,
                                       overlap=args.overlap, batch_size=args.batch_size, device=device)
        labels = labels_from_logits(logits[0], threshold).numpy()[0]  # (H, W) class indices (binary: 0/1)
        atomic_write_bytes(output / f"{path.stem}.png", png_bytes(labels.astype(np.uint8) * scale))
        if args.overlay:
            atomic_write_bytes(output / f"{path.stem}_overlay.png", overlay_png(image, labels, colours))
        print(f"{printable(path.name)}: {image.shape[1]}x{image.shape[0]}, {_shares(labels, classes)}", flush=True)
    print(f"wrote {len(inputs)} {'mask' if classes == 2 else 'label map'}(s) to {printable(output)} (patch "
          f"{'x'.join(map(str, patch))}, overlap {args.overlap}, {'onnxruntime' if args.onnx else 'PyTorch ' + str(device)})")


def _shares(labels: np.ndarray, classes: int) -> str:
    """``foreground 12.34%`` (binary), or each class's share of the pixels."""
    if classes == 2:
        return f"foreground {(labels > 0).mean():.2%}"
    counts = np.bincount(labels.ravel(), minlength=classes) / max(1, labels.size)
    return "classes " + " ".join(f"{value}:{share:.1%}" for value, share in enumerate(counts))


def _patch_size(parser: argparse.ArgumentParser, args: argparse.Namespace, info,
                fixed: tuple[int, ...] | None) -> tuple[int, ...]:
    dims = checkpoint_spatial_dims(info.space)
    if fixed is not None:
        if args.image_size is not None and (args.image_size,) * dims != fixed:
            parser.error(f"--image-size {args.image_size} does not fit the ONNX model, exported with a fixed "
                         f"{'x'.join(map(str, fixed))} input")
        return fixed
    if args.image_size is not None:
        return (args.image_size,) * dims
    return default_input_size(info.metrics, dims)


if __name__ == "__main__":
    sys.exit(main())
