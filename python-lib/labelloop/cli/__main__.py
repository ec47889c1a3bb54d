"""`python -m labelloop.cli ...`: the same as the `labelloop` script."""

from . import main

if __name__ == "__main__":
    main()
