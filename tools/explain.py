"""Explain a checkpoint's decisions as PNGs: Grad-CAM overlays, Guided Backprop, Guided Grad-CAM and a grid.

``python tools/explain.py --config CONFIG --ckpt_path CKPT --images DIR_OR_FILE
[--method gradcam|guided|guided_gradcam|all] [--target predicted|<class name>|<index>]
[--reference IMG] --output DIR [--overwrite]``
"""

from facetorch.explain_cli import main

if __name__ == "__main__":
    main()
