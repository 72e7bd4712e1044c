"""Train a facetorch task: ``python tools/train.py --config configs/face_vgg.yaml [--section.key=value ...]``.

Fits, then tests the best checkpoint when the data has a test split. The run folder
(``runs/<name>/version_N``, or under ``--trainer.default_root_dir``) receives ``config.yaml``,
``checkpoints/``, plots and ``metrics.json``. See ``facetorch.cli.lightning``.
"""

from facetorch.cli.lightning import train_main

if __name__ == "__main__":
    train_main()
