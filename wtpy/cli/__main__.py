"""`python -m wtpy.cli` runs the `wtpy` console script."""

from wtpy.cli import main

main()
