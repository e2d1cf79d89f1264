#!/usr/bin/env python3
"""Runs the dataset queries of analyze/EXPORTS.md with Spark SQL (PySpark in
local mode) on a `heapdump toparquet` dataset, exactly as written there: the
same text DuckDB runs in tests/tests/export_parquet.rs.

    pip install pyspark          # large (~400 MB); Java 17 must be installed
    python3 scripts/spark_queries.py DATASET_DIR [analyze/EXPORTS.md]

Each table directory of the dataset becomes a temporary view named after
the table (`spark.read.parquet("DATASET_DIR/objects")`, which adds the
`dump` column from the `dump=ID` directories); then every
`<!-- dataset query: NAME -->` block runs and its rows are printed.
"""

import os
import re
import sys

from pyspark.sql import SparkSession

MARKER = re.compile(r"<!-- dataset query: (\w+) -->\s*```sql\n(.*?)\n```", re.S)


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(f"usage: {sys.argv[0]} DATASET_DIR [EXPORTS.md]")
    dataset = sys.argv[1]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    exports_md = sys.argv[2] if len(sys.argv) == 3 else os.path.join(root, "analyze", "EXPORTS.md")
    with open(exports_md, encoding="utf-8") as f:
        queries = MARKER.findall(f.read())
    if not queries:
        sys.exit(f"no dataset queries in {exports_md}")

    spark = (
        SparkSession.builder.master("local[2]")
        .appName("heapdump dataset queries")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    print(f"Spark {spark.version}, dataset {dataset}")
    for table in sorted(os.listdir(dataset)):
        if table.startswith((".", "_")):
            continue
        spark.read.parquet(os.path.join(dataset, table)).createOrReplaceTempView(table)
    for name, sql in queries:
        # Spark's parser takes one statement without the final semicolon.
        rows = spark.sql(sql.strip().rstrip(";")).collect()
        print(f"\n{name}:")
        if rows:
            print("  " + " | ".join(rows[0].__fields__))
        for row in rows:
            print("  " + " | ".join(str(value) for value in row))
    spark.stop()


if __name__ == "__main__":
    main()
