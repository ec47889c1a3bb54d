"""Datasets: a schema and rows in the project's database, in one of two storages.

- `schema`: column types, `normalize` (a frame typed after a schema);
- `rows`: row storage (one SQL row per record) and the row-level `insert`/`update`/`delete`;
- `chunks`: chunk storage (column-wise Arrow IPC files under `data/`), `read_chunk_file`;
- `files`: reading CSV and Parquet files;
- `dataset`: `Dataset`, the one API over both storages.
"""

from .chunks import (
    CHUNK_ROWS,
    COLUMNAR_MIN_ROWS,
    DATA_DIR,
    SWEEP_GRACE,
    PreparedWrite,
    read_chunk_file,
)
from .dataset import Dataset
from .files import read_table_file
from .rows import CHUNK
from .schema import ROW, SQL_TYPES, STORAGES, column_type, normalize, schema_of

__all__ = ["Dataset", "PreparedWrite", "normalize", "schema_of", "column_type",
           "read_chunk_file", "read_table_file", "ROW", "SQL_TYPES", "STORAGES", "CHUNK",
           "CHUNK_ROWS", "COLUMNAR_MIN_ROWS", "DATA_DIR", "SWEEP_GRACE"]
