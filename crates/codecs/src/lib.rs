//! Codecs: reading readings and writing predictions, in CSV and Parquet.
//!
//! Readings arrive columnar ([`Readings`]): timestamps, values and a small
//! integer per row naming its (device, tag) pair, interned while reading so
//! that later stages group rows by model without hashing strings again.
//! Predictions leave as Parquet (the default; readable by pandas, DuckDB,
//! Spark) or as CSV in the reference deployment's layouts.
//!
//! The HTTP ingest endpoints' request bodies — InfluxDB line protocol
//! ([`parse_line_protocol`]), JSON / NDJSON ([`parse_json`]) and CSV
//! ([`parse_csv_body`]) — parse into a [`Batch`] of the same columnar
//! [`Readings`], all or nothing: one bad line refuses the batch with a
//! [`BatchError`] naming every bad line (up to [`MAX_REPORTED_ERRORS`]);
//! line protocol can also keep the good lines ([`parse_line_protocol_partial`],
//! InfluxDB's partial write). Broker messages (MQTT, Kafka) are read one by
//! one with [`decode_payload`].
//!
//! Every file error names the file and, for row-level problems, the line (CSV,
//! 1-based, counting the header as line 1) or row (Parquet, 0-based) and
//! the column.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
// A library reports through return values and `tracing`, never by printing.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

mod csvbody;
mod ingest;
mod json;
mod lineproto;
mod message;
mod predictions;
mod raw;
mod readings;

pub use csvbody::{parse_csv_body, Column, CsvBodyConfig, ExtraColumns};
pub use fleetscore_core::drop_unused_keys;
pub use ingest::{
    json_ts, Batch, BatchError, Location, PartialBatch, Reading, Rejection, MAX_REPORTED_ERRORS,
};
pub use json::parse_json;
pub use lineproto::{
    parse_line_protocol, parse_line_protocol_partial, BoolFields, LineProtocolConfig, Precision,
    PrecisionError,
};
pub use message::{
    decode_payload, MessageMeta, PayloadConfig, PayloadError, PayloadFormat, Problem,
};
/// A Parquet object's footer metadata ([`decode_parquet_footer`]).
pub use parquet::file::metadata::ParquetMetaData;
pub use predictions::{
    per_model_file_name, predictions_parquet_bytes, read_predictions_parquet_bytes,
    write_predictions, ModelOutput, OutputFormat, PredictionColumns, PredictionLayout,
    PredictionRow, WrittenFile,
};
pub use raw::{
    decode_parquet_footer, merge_ranges, raw_readings_schema, read_batches_parquet_bytes,
    read_readings_parquet_bytes, read_readings_parquet_row_groups, read_readings_parquet_sparse,
    row_group_ranges, scan_ranges, scan_raw_parquet_bytes, scan_raw_parquet_sparse,
    window_row_groups, write_batch_parquet, write_readings_parquet, RawScan, SparseObject,
    FOOTER_GUESS,
};
pub use readings::{read_readings, InputFormat, Readings};

use std::path::PathBuf;

/// Why reading or writing a file failed.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A row has a bad value.
    #[error("{path}: {location}, column {column}: {reason}")]
    Row {
        /// The file.
        path: PathBuf,
        /// `line N` (CSV) or `row N` (Parquet).
        location: String,
        /// Column name.
        column: String,
        /// What is wrong.
        reason: String,
    },
    /// The file's columns are not what is needed.
    #[error("{path}: {reason}")]
    Schema {
        /// The file.
        path: PathBuf,
        /// What is wrong, and what was expected.
        reason: String,
    },
    /// The Parquet or Arrow library refused the data.
    #[error("{path}: {reason}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The library's message.
        reason: String,
    },
}
