"""Pseudo-labelled face boxes from a teacher detector: see ``facetorch.cli.prepare_boxes``."""

from facetorch.cli.prepare_boxes import main

if __name__ == "__main__":
    main()
