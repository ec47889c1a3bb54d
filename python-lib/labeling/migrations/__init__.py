"""The labeling plugin's migration history (its `lb_*` and `sim_*` tables), through the host's
`register_migrations` hook: the host upgrades it without importing this package."""

from pathlib import Path

VERSIONS = Path(__file__).resolve().parent / "versions"
# The history's head, declared to the host (`register(..., head=HEAD)`): a database found at it
# is not handed to Alembic. `tests/test_migrations.py` checks it: bump it with each revision.
HEAD = "lb0006"
