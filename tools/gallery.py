"""Enrol people, identify faces (or answer "unknown"), verify pairs: see ``facetorch.cli.gallery``."""

from facetorch.cli.gallery import main

if __name__ == "__main__":
    main()
