"""`python -m labelloop.cli ...`: the same as the `labelloop` script."""

from . import main

main()
