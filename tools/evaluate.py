"""Evaluate a checkpoint on a folder of the task's layout.

``python tools/evaluate.py --config CONFIG --ckpt_path CKPT --data.root DIR [--output FILE]``
writes the flat metrics JSON to ``--output`` and prints it as the last line of stdout.
"""

from facetorch.cli import evaluate

if __name__ == "__main__":
    evaluate()
