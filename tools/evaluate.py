"""Evaluate a checkpoint on a folder of the task's layout.

``python tools/evaluate.py --config CONFIG --ckpt_path CKPT --data.root DIR [--output FILE] [--overwrite]``
writes the flat metrics JSON to ``--output`` and prints it as the last line of stdout. See
``facetorch.cli.lightning``.
"""

from facetorch.cli.lightning import evaluate_main

if __name__ == "__main__":
    evaluate_main()
