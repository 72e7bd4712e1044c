"""Score classical baselines on the same split a config gives the deep model: see ``facetorch.cli.baselines``."""

from facetorch.cli.baselines import main

if __name__ == "__main__":
    main()
