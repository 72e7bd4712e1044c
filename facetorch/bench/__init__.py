"""Throughput measurements, each a ratio against a baseline run in the same process:
training (``training``: Trainer vs a plain loop, bf16 vs fp32, loader vs model) and
explanations (``gradcam``: facetorch's explainers vs plain autograd)."""
