"""Compression stage: channel pruning (``compress.prune``), fine-tuning with optional distillation
(``compress.finetune``), fp32/fp16/int8 ONNX (``compress.quantize``), the per-checkpoint pipeline and
its index (``compress.pipeline``, ``compress.index``) and the ``nas-compress`` CLI (``nas.cli.compress``).
Submodules are imported on use, so ``import compress`` stays light."""
