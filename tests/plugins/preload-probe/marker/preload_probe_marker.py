"""Remembers the process that imported it."""

import os

IMPORTED_IN = os.getpid()
