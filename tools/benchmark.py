"""Benchmark a task (``--task face_vgg|identity|embedding|detector|gradcam``): see ``facetorch.cli.benchmark``."""

from facetorch.cli.benchmark import main

if __name__ == "__main__":
    main()
