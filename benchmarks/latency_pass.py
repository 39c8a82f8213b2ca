"""One interleaved latency pass (nas.costs.latency) next to the single pass a trial records today.

Builds ``--models`` sampled ResUNets, times each once the way a trial does (``measure_latency``:
median of 10 after 3 warm-up), then all of them in one interleaved pass on torch and, with
``--onnx``, on ONNX Runtime. Prints one JSON line per model and engine.

    .venv/bin/python benchmarks/latency_pass.py --models 6 --image-size 64 --onnx
"""
from __future__ import annotations

import argparse
import json

import torch

from nas.costs.latency import measure_latencies
from nas.costs.measure import measure_latency
from nas.deploy.export import export_onnx
from search_spaces import RandomSuggest, get_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=6)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--onnx", action="store_true", help="also the onnxruntime engine")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    space = get_space("resunet")
    models = {f"seed{seed}": space.build_model(space.sample_spec(RandomSuggest(seed)), 1, 1)
              for seed in range(args.models)}
    shape = (1, 1, args.image_size, args.image_size)
    single = {name: measure_latency(model, shape) for name, model in models.items()}
    engines = ["torch"] + (["onnxruntime"] if args.onnx else [])
    for engine in engines:
        results = measure_latencies(models, shape, engine=engine, export=export_onnx,
                                    rounds=args.rounds, repeats=args.repeats)
        for name, result in results.items():
            print(json.dumps({"single_pass_ms": round(single[name], 3), **result.to_dict()}))


if __name__ == "__main__":
    main()
