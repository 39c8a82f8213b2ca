"""Deployment: checkpoints (spec JSON + safetensors), ONNX export, model cards, prediction overlays."""
