#!/usr/bin/env python3
"""Reads a predictions Parquet file with pyarrow and with DuckDB and checks
every row against the same predictions written as CSV.

    python3 read_predictions.py PREDICTIONS.parquet PREDICTIONS.csv

Run by crates/codecs/tests/readers.rs (which writes both files with
fleetscore's writers); prints what it checked, exits non-zero on the first
difference.
"""

import datetime
import sys

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq


def fail(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    parquet, csv = sys.argv[1], sys.argv[2]
    meta = pq.ParquetFile(parquet).metadata
    table = pq.read_table(parquet)
    want = {
        "TS": pa.timestamp("us", tz="UTC"),
        "Device": pa.dictionary(pa.uint32(), pa.string()),
        "Tag": pa.dictionary(pa.uint32(), pa.string()),
        "Val": pa.float64(),
        "Prediction": pa.int32(),
        "Score": pa.float64(),
    }
    got = {f.name: f.type for f in table.schema}
    if got != want:
        fail(f"pyarrow reads the schema {got}, expected {want}")

    text = {name: pa.string() for name in ("TS", "Device", "Tag")}
    expected = pacsv.read_csv(csv, convert_options=pacsv.ConvertOptions(column_types=text))
    if table.num_rows != expected.num_rows:
        fail(f"pyarrow reads {table.num_rows} rows, the CSV has {expected.num_rows}")
    # The CSV's TS is `YYYY-MM-DD HH:MM:SS.fff` (UTC).
    epoch = datetime.datetime(1970, 1, 1)
    ts = [
        (epoch + datetime.timedelta(microseconds=us)).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        for us in table["TS"].cast(pa.int64()).to_pylist()
    ]
    if ts != expected["TS"].to_pylist():
        fail("pyarrow reads other timestamps than the CSV's")
    for name in ("Device", "Tag"):
        if table[name].cast(pa.string()).to_pylist() != expected[name].to_pylist():
            fail(f"pyarrow reads another {name} column than the CSV's")
    for name in ("Val", "Prediction", "Score"):
        if table[name].to_pylist() != expected[name].to_pylist():
            fail(f"pyarrow reads another {name} column than the CSV's")
    print(f"pyarrow: {table.num_rows} rows in {meta.num_row_groups} row group(s) equal the CSV's")

    con = duckdb.connect()
    q = f"""
        WITH p AS (SELECT strftime(TS AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M:%S.%g') AS TS,
                          Device, Tag, Val, Prediction, Score
                   FROM read_parquet('{parquet}')),
             c AS (SELECT * FROM read_csv('{csv}', header = true,
                   columns = {{'TS': 'VARCHAR', 'Device': 'VARCHAR', 'Tag': 'VARCHAR',
                              'Val': 'DOUBLE', 'Prediction': 'INTEGER', 'Score': 'DOUBLE'}}))
        SELECT (SELECT count(*) FROM p), (SELECT count(*) FROM c),
               (SELECT count(*) FROM (SELECT * FROM p EXCEPT ALL SELECT * FROM c)),
               (SELECT count(*) FROM (SELECT * FROM c EXCEPT ALL SELECT * FROM p)),
               (SELECT count(DISTINCT Device) FROM p)
    """
    n_p, n_c, only_p, only_c, devices = con.execute(q).fetchone()
    if (n_p, only_p, only_c) != (n_c, 0, 0):
        fail(f"DuckDB reads {n_p} rows against the CSV's {n_c}: "
             f"{only_p} only in the Parquet file, {only_c} only in the CSV")
    print(f"duckdb: {n_p} rows of {devices} devices equal the CSV's")


if __name__ == "__main__":
    main()
