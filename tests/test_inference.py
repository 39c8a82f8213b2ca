"""Sliding-window inference: exact on one window, seamless blending, any size, bounded memory."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from nas.data.loading import Normalization
from nas.train.inference import gaussian_importance, sliding_window_logits, window_starts
from search_spaces import get_space
from search_spaces.resunet import ResUNetSpec

NORM = Normalization(mean=(0.4,), std=(0.2,))


def tiny_model(in_channels: int = 1) -> torch.nn.Module:
    torch.manual_seed(0)
    spec = ResUNetSpec(encoder_widths=(8, 16, 32), decoder_widths=(8, 16))
    return get_space("resunet").build_model(spec, in_channels, 1).eval()


def test_one_window_equals_a_direct_forward():
    model = tiny_model()
    image = torch.rand(1, 48, 64)  # (C, H, W) raw in [0, 1], exactly one window
    logits = sliding_window_logits(model, image, normalization=NORM, patch_size=(48, 64), overlap=0.5)
    with torch.inference_mode():
        direct = model(NORM.apply(image)[None])  # (1, 1, 48, 64)
    assert logits.shape == (1, 1, 48, 64)
    assert torch.allclose(logits, direct, atol=1e-5)


def test_constant_predictor_gives_constant_output_without_seams():
    def constant(windows: torch.Tensor) -> torch.Tensor:  # (N, C, P, P) -> (N, 2, P, P)
        return torch.full((windows.shape[0], 2, *windows.shape[-2:]), 3.25)

    out = sliding_window_logits(constant, torch.rand(1, 150, 97), normalization=NORM, patch_size=32, overlap=0.4)
    assert out.shape == (1, 2, 150, 97)
    assert torch.allclose(out, torch.full_like(out, 3.25), atol=1e-5)


def test_windows_are_placed_where_they_were_cut():
    """A predictor returning its input must give back the normalized image exactly, at every overlap."""
    image = torch.rand(2, 2, 101, 77)  # (B, C, H, W)
    norm = Normalization(mean=(0.5, 0.3), std=(0.25, 0.1))
    for overlap in (0.0, 0.25, 0.5):
        out = sliding_window_logits(lambda w: w * 1.0, image, normalization=norm, patch_size=(32, 24),
                                    overlap=overlap, batch_size=3)
        assert torch.allclose(out, norm.apply(image), atol=1e-5), overlap


def test_non_square_larger_than_patch_and_smaller_than_patch():
    model = tiny_model()
    big = sliding_window_logits(model, torch.rand(1, 1, 90, 133), normalization=NORM, patch_size=32)
    small = sliding_window_logits(model, torch.rand(1, 20, 27), normalization=NORM, patch_size=32)
    assert big.shape == (1, 1, 90, 133) and torch.isfinite(big).all()
    assert small.shape == (1, 1, 20, 27) and torch.isfinite(small).all()


def test_batch_equals_images_one_by_one_and_blending_is_smooth():
    model = tiny_model()
    images = torch.rand(2, 1, 70, 90)
    together = sliding_window_logits(model, images, normalization=NORM, patch_size=32, batch_size=5)
    for index in range(2):
        alone = sliding_window_logits(model, images[index], normalization=NORM, patch_size=32, batch_size=2)
        assert torch.allclose(together[index], alone[0], atol=1e-5)


def test_window_geometry():
    assert window_starts(64, 64, 0.5) == [0]
    assert window_starts(20, 64, 0.5) == [0]
    starts = window_starts(150, 32, 0.5)
    assert starts[0] == 0 and starts[-1] == 150 - 32
    assert max(b - a for a, b in zip(starts, starts[1:])) <= 16
    gaussian = gaussian_importance((32, 24))
    assert gaussian.shape == (32, 24) and gaussian.max() <= 1 and gaussian.min() > 0
    assert gaussian[0, 0] < gaussian[16, 12]  # borders count least


def test_bad_arguments_are_refused():
    model = tiny_model()
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_logits(model, torch.rand(1, 40, 40), normalization=NORM, patch_size=32, overlap=0.95)
    with pytest.raises(ValueError, match="channel"):
        sliding_window_logits(model, torch.rand(3, 40, 40), normalization=NORM, patch_size=32)
    with pytest.raises(ValueError, match="training mode"):
        sliding_window_logits(model.train(), torch.rand(1, 40, 40), normalization=NORM, patch_size=32)


_MEMORY_SCRIPT = textwrap.dedent("""
    import json, threading, torch
    from nas.data.loading import Normalization
    from nas.train.inference import sliding_window_logits
    torch.set_num_threads(1)  # 2 threads on 2 shared cores is several times slower here
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(4, 1, 3, padding=1)).eval()  # the bound is the accumulator's
    image = torch.rand(1, 1, 2048, 1536)
    norm = Normalization(mean=(0.5,), std=(0.25,))
    sliding_window_logits(model, image[..., :256, :256], normalization=norm, patch_size=128)  # warm-up
    def anon_bytes():  # anonymous memory only: library pages faulted in later are not the algorithm's
        with open("/proc/self/status") as f:
            return 1024 * next(int(line.split()[1]) for line in f if line.startswith("RssAnon"))
    before, peak, done = anon_bytes(), [0], threading.Event()
    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], anon_bytes())
            done.wait(0.002)
    sampler = threading.Thread(target=sample)
    sampler.start()
    out = sliding_window_logits(model, image, normalization=norm, patch_size=128, overlap=0.25, batch_size=4)
    done.set()
    sampler.join()
    peak[0] = max(peak[0], anon_bytes())
    print(json.dumps({"growth": peak[0] - before, "output": out.numel() * 4, "shape": list(out.shape)}))
""")



@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads RssAnon from /proc/self/status (Linux only)")
def test_memory_stays_near_the_accumulator_on_a_large_image():
    """2048x1536: peak growth of anonymous RSS is the float32 output (12 MiB) plus a small constant.

    A two-conv model keeps it fast; the model only sets the per-window term (benchmarks/inference_memory.py
    runs a ResUNet on a 3840x2160 image).
    """
    run = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["shape"] == [1, 1, 2048, 1536]
    bound = result["output"] + 8 * 2**20  # output + windows, their activations and allocator slack
    print(f"peak anonymous RSS growth {result['growth'] / 2**20:.1f} MiB, output {result['output'] / 2**20:.1f} MiB")
    assert result["growth"] < bound, f"peak RSS grew {result['growth'] / 2**20:.1f} MiB, bound {bound / 2**20:.1f} MiB"
