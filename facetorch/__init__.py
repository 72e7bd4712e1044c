"""facetorch: train, evaluate and explain face models with PyTorch Lightning."""

__version__ = "0.1.0"
