"""`python -m satnet ...` (and `torchrun ... -m satnet train ...`): the `satnet` command."""
import sys

from satnet.cli import main

if __name__ == "__main__":
    sys.exit(main())
