"""Data layer on pyarrow: schemas, importers, named datasets, splits and popularity buckets."""

from longtail.data.dataset import Dataset, read_manifest, read_split, read_table, write_dataset
from longtail.data.errors import DataError
from longtail.data.importers import FORMATS, ImportOptions, import_source
from longtail.data.named import NAMED, load_named
from longtail.data.splits import PARTS, SplitTables, popularity_buckets

__all__ = [
    "FORMATS",
    "NAMED",
    "PARTS",
    "DataError",
    "Dataset",
    "ImportOptions",
    "SplitTables",
    "import_source",
    "load_named",
    "popularity_buckets",
    "read_manifest",
    "read_split",
    "read_table",
    "write_dataset",
]
