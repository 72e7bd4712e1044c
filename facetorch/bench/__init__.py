"""Throughput measurements, each a ratio against a baseline run in the same process.

``training``: Trainer vs a plain loop, bf16 vs fp32, loader vs model; ``gradcam``: facetorch's
explainers vs plain autograd.
"""
