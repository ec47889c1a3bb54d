"""The labeling plugin's migration history (its `lb_*` and `sim_*` tables), through the host's
`register_migrations` hook: the host upgrades it without importing this package."""

from pathlib import Path

VERSIONS = Path(__file__).resolve().parent / "versions"
