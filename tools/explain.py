"""Explain a checkpoint's decisions as PNGs: see ``facetorch.cli.explain``.

Grad-CAM overlays, Guided Backprop, Guided Grad-CAM and a grid of them:

``python tools/explain.py --config CONFIG --ckpt_path CKPT --images DIR_OR_FILE --output DIR
[--method gradcam|guided|guided_gradcam|all] [--target predicted|<class name>|<index>] [--reference IMG] [--overwrite]``
"""

from facetorch.cli.explain import main

if __name__ == "__main__":
    main()
