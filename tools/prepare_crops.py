"""Prepare face / non-face crops or identity face crops: see ``facetorch.cli.prepare_crops``."""

from facetorch.cli.prepare_crops import main

if __name__ == "__main__":
    main()
