"""Detect the face in images, a video or a camera with a trained detector: see ``facetorch.cli.detect``."""

from facetorch.cli.detect import main

if __name__ == "__main__":
    main()
