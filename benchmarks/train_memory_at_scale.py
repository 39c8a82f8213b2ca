"""Training-step memory and MACs of a preset at any input size, including non-square (4K) ones.

Both are counted on the meta device (``nas.costs``), so the command itself needs a few hundred MB
whatever the size; ``nas-profile`` takes square sizes and also times a real forward.

    /usr/bin/time -v .venv/bin/python benchmarks/train_memory_at_scale.py --height 2160 --width 3840
"""
from __future__ import annotations

import argparse
import json

from nas.costs.constraints import training_step_memory
from nas.costs.measure import count_macs, count_params
from search_spaces import get_space
from search_spaces.presets import get_preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="resunet-standard")
    parser.add_argument("--height", type=int, default=2160)
    parser.add_argument("--width", type=int, default=3840)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--in-channels", type=int, default=None, help="default: the preset's")
    args = parser.parse_args()
    preset = get_preset(args.preset)
    channels = args.in_channels or preset.in_channels
    model = get_space(preset.space).build_model(preset.spec, channels, 1)
    shape = (args.batch_size, channels, args.height, args.width)
    print(json.dumps({"preset": preset.name, "input_shape": shape, "params": count_params(model),
                      "macs": count_macs(model, shape), **training_step_memory(model, shape)}))


if __name__ == "__main__":
    main()
