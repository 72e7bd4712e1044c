"""Export a checkpoint (or a pretrained config) as ONNX or TorchScript with its metadata: see ``facetorch.cli.export``.

``python tools/export.py --config CONFIG [--ckpt_path CKPT] --format onnx|torchscript --output FILE
[--opset N] [--dynamic_batch]``
"""

from facetorch.cli.export import main

if __name__ == "__main__":
    main()
