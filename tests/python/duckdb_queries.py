"""Runs the dataset queries of analyze/EXPORTS.md on a `heapdump toparquet`
dataset with DuckDB and prints every answer as JSON:
{"NAME": {"columns": [...], "rows": [[...], ...]}, ...}.

    python3 duckdb_queries.py analyze/EXPORTS.md DATASET_DIR

Each table of the dataset is a view named after it, as EXPORTS.md shows;
the queries run as they are written there.
"""

import json
import os
import re
import sys

import duckdb

MARKER = re.compile(r"<!-- dataset query: (\w+) -->\s*```sql\n(.*?)\n```", re.S)


def documented_queries(exports_md):
    with open(exports_md, encoding="utf-8") as f:
        return dict(MARKER.findall(f.read()))


def main():
    exports_md, dataset = sys.argv[1], sys.argv[2]
    db = duckdb.connect()
    for table in sorted(os.listdir(dataset)):
        if table.startswith((".", "_")):
            continue
        pattern = os.path.join(dataset, table, "*", "*.parquet").replace("'", "''")
        db.sql(
            f"CREATE VIEW {table} AS SELECT * FROM "
            f"read_parquet('{pattern}', hive_partitioning = true)"
        )
    answers = {}
    for name, sql in documented_queries(exports_md).items():
        result = db.sql(sql)
        answers[name] = {"columns": result.columns, "rows": [list(r) for r in result.fetchall()]}
    json.dump(answers, sys.stdout, indent=1, default=str)


if __name__ == "__main__":
    main()
