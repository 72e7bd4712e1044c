"""Enrol people, identify faces (or answer "unknown"), verify pairs; see ``facetorch.gallery_cli``."""

from facetorch.gallery_cli import main

if __name__ == "__main__":
    main()
