"""``python -m jaxdd.cli``: the same as the ``jaxdd`` console script."""
import sys

from jaxdd.cli import main

sys.exit(main())
