"""``python -m deal_chains.cli``: the same as the ``deal-chains`` console script."""

import sys

from deal_chains.cli import main

sys.exit(main())
