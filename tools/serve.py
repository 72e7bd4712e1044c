"""Serve recognition over HTTP, with a web page: see ``facetorch.cli.serve``."""

from facetorch.cli.serve import main

if __name__ == "__main__":
    main()
