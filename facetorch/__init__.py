"""facetorch: train, evaluate and explain face models with PyTorch Lightning."""

__version__ = "0.2.0"
