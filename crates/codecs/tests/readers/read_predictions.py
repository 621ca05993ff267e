#!/usr/bin/env python3
"""Reads a predictions Parquet file with pyarrow, pandas and DuckDB and
checks every row against the same predictions written as CSV.

    python3 read_predictions.py PREDICTIONS.parquet PREDICTIONS.csv

Run by crates/codecs/tests/readers.rs (which writes both files with
fleetscore's writers); prints what it checked, exits non-zero on the first
difference. A model's missing Prediction or Label must read as null (NaN
in pandas), an empty cell in the CSV; Label must read as text.
"""

import datetime
import math
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
    text_dict = pa.dictionary(pa.uint32(), pa.string())
    want = {
        "TS": pa.timestamp("us", tz="UTC"),
        "Device": text_dict,
        "Tag": text_dict,
        "Val": pa.float64(),
        "Prediction": pa.int32(),
        "Score": pa.float64(),
        "Label": text_dict,
    }
    got = {f.name: f.type for f in table.schema}
    if got != want or list(got) != list(want):
        fail(f"pyarrow reads the schema {got}, expected {want}")

    text = {name: pa.string() for name in ("TS", "Device", "Tag", "Label")}
    expected = pacsv.read_csv(
        csv,
        # Class texts may hold a line break (quoted).
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types={**text, "Prediction": pa.int32()},
            # An empty Label cell is a null, as in the Parquet file.
            strings_can_be_null=True,
        ),
    )
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
    for name in ("Device", "Tag", "Label"):
        if table[name].cast(pa.string()).to_pylist() != expected[name].to_pylist():
            fail(f"pyarrow reads another {name} column than the CSV's")
    for name in ("Val", "Prediction", "Score"):
        if table[name].to_pylist() != expected[name].to_pylist():
            fail(f"pyarrow reads another {name} column than the CSV's")
    nulls = {name: table[name].null_count for name in ("Prediction", "Label")}
    if 0 in nulls.values() or table["Label"].null_count == table.num_rows:
        fail(f"the fleet should have rows with and rows without each of {nulls}")
    print(f"pyarrow: {table.num_rows} rows in {meta.num_row_groups} row group(s) equal the CSV's; "
          f"nulls: {nulls}")

    # pandas: a missing Prediction is NaN, Label a categorical of str.
    df = pq.read_table(parquet).to_pandas()
    pred = df["Prediction"]
    if pred.isna().sum() != nulls["Prediction"]:
        fail(f"pandas reads {pred.isna().sum()} missing Predictions, expected {nulls['Prediction']}")
    want_pred = expected["Prediction"].to_pylist()
    for got_p, want_p in zip(pred.tolist(), want_pred):
        if (want_p is None) != (isinstance(got_p, float) and math.isnan(got_p)) or (
            want_p is not None and got_p != want_p
        ):
            fail(f"pandas reads Prediction {got_p!r} where the CSV has {want_p!r}")
    labels = df["Label"]
    if str(labels.dtype) != "category":
        fail(f"pandas reads Label as {labels.dtype}, expected category")
    if not all(isinstance(c, str) for c in labels.cat.categories):
        fail(f"pandas reads Label categories {list(labels.cat.categories)[:5]}, expected text")
    got_labels = [None if isinstance(v, float) and math.isnan(v) else v for v in labels.tolist()]
    if got_labels != expected["Label"].to_pylist():
        fail("pandas reads another Label column than the CSV's")
    print(f"pandas: Prediction {pred.dtype} with {pred.isna().sum()} NaN, "
          f"Label categorical of {len(labels.cat.categories)} texts, equal the CSV's")

    con = duckdb.connect()
    q = f"""
        WITH p AS (SELECT strftime(TS AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M:%S.%g') AS TS,
                          Device, Tag, Val, Prediction, Score, Label
                   FROM read_parquet('{parquet}')),
             c AS (SELECT * FROM read_csv('{csv}', header = true,
                   columns = {{'TS': 'VARCHAR', 'Device': 'VARCHAR', 'Tag': 'VARCHAR',
                              'Val': 'DOUBLE', 'Prediction': 'INTEGER', 'Score': 'DOUBLE',
                              'Label': 'VARCHAR'}}))
        SELECT (SELECT count(*) FROM p), (SELECT count(*) FROM c),
               (SELECT count(*) FROM (SELECT * FROM p EXCEPT ALL SELECT * FROM c)),
               (SELECT count(*) FROM (SELECT * FROM c EXCEPT ALL SELECT * FROM p)),
               (SELECT count(DISTINCT Device) FROM p),
               (SELECT count(*) FROM p WHERE Prediction IS NULL),
               (SELECT count(*) FROM p WHERE Label IS NULL),
               (SELECT any_value(typeof(Label)) FROM p),
               (SELECT any_value(typeof(Prediction)) FROM p)
    """
    n_p, n_c, only_p, only_c, devices, no_pred, no_label, label_t, pred_t = con.execute(q).fetchone()
    if (n_p, only_p, only_c) != (n_c, 0, 0):
        fail(f"DuckDB reads {n_p} rows against the CSV's {n_c}: "
             f"{only_p} only in the Parquet file, {only_c} only in the CSV")
    if (no_pred, no_label) != (nulls["Prediction"], nulls["Label"]):
        fail(f"DuckDB reads {no_pred} null Predictions and {no_label} null Labels, "
             f"expected {nulls}")
    if (label_t, pred_t) != ("VARCHAR", "INTEGER"):
        fail(f"DuckDB reads Label as {label_t} and Prediction as {pred_t}")
    print(f"duckdb: {n_p} rows of {devices} devices equal the CSV's; "
          f"Label {label_t}, Prediction {pred_t}")


if __name__ == "__main__":
    main()
