"""`python -m satnet.cli`: the `satnet` command."""
import sys

from satnet.cli import main

sys.exit(main())
