"""Write a data set as streaming shards (LitData): see ``facetorch.cli.prepare_shards``."""

from facetorch.cli.prepare_shards import main

if __name__ == "__main__":
    main()
