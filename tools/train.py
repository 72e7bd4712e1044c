"""Train a facetorch task: ``python tools/train.py --config configs/face_vgg.yaml [--section.key=value ...]``.

Fits, then tests the best checkpoint when the data has a test split. The run folder
(``runs/<name>/version_N``) receives ``config.yaml``, ``checkpoints/``, plots and ``metrics.json``.
"""

from facetorch.cli import train

if __name__ == "__main__":
    train()
