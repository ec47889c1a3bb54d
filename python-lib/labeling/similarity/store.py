"""The similarity webapps' own tables: questions, tuned versions and saves.

Everything a second server process needs lives here, never only in memory:

- `sim_questions`: one row per question handed out: who got it, the query, its candidates and
  their scores, the model version that ranked them; once answered, when, how (`ANSWERED` or
  `IGNORED`) and the positives / negatives. A question is answered at most once: the answer
  is an `UPDATE ... WHERE answered IS NULL` in the transaction that appends its pairs.
- `sim_versions`: the tuned projections (version 1, 2, ...; version 0 is the base embedding),
  each with the number of answered questions it was trained on, so any process can tell
  whether a newer one is due (the page's spinner) and load the newest.
- `sim_saves`: each "Save model": the saved model version it wrote.

The tables are made and changed by the plugin's Alembic history (`labeling.migrations`) alone.
The base embedding itself is not stored: every process fits it the same way on the same first
items of the pool (deterministic), and the pool's vectors are recomputed per process.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

questions_table = sa.Table(
    "sim_questions", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("app", sa.String(200), nullable=False),
    sa.Column("annotator", sa.String(200), nullable=False),
    sa.Column("query_id", sa.Text, nullable=False),
    sa.Column("candidates", sa.JSON, nullable=False),
    sa.Column("scores", sa.JSON, nullable=False),
    sa.Column("model_version", sa.Integer, nullable=False),
    sa.Column("issued", sa.Float, nullable=False),
    sa.Column("answered", sa.Float),
    sa.Column("status", sa.String(10)),
    sa.Column("positives", sa.JSON),
    sa.Column("negatives", sa.JSON),
    sa.Column("n_pos", sa.Integer, nullable=False, default=0),
    sa.Column("n_neg", sa.Integer, nullable=False, default=0),
    sa.Index("ix_sim_questions_app_answered", "app", "answered"),
)
versions_table = sa.Table(
    "sim_versions", metadata,
    sa.Column("app", sa.String(200), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("n_questions", sa.Integer, nullable=False),
    sa.Column("n_pairs", sa.Integer, nullable=False),
    sa.Column("dim", sa.Integer, nullable=False),
    sa.Column("matrix", sa.LargeBinary, nullable=False),  # float64, row-major, dim x dim
    sa.Column("threshold", sa.Float),
    sa.Column("seconds", sa.Float),
)
saves_table = sa.Table(
    "sim_saves", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("app", sa.String(200), nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("model_version", sa.Integer, nullable=False),
    sa.Column("tuned_version", sa.Integer, nullable=False),
    sa.Column("annotator", sa.String(200), nullable=False),
    sa.Column("created", sa.Float, nullable=False),
)
