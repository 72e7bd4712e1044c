"""Generate a synthetic identity_folders data set for scale measurements: see ``facetorch.cli.synthetic_faces``."""

from facetorch.cli.synthetic_faces import main

if __name__ == "__main__":
    main()
