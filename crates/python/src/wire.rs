//! Frames on the pipes, and the Arrow IPC batches they carry.
//!
//! A frame is a JSON header (4-byte little-endian length first) and a
//! payload (8-byte little-endian length first, possibly empty).

use std::io::{Read, Write};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;

/// Headers longer than this are refused (a confused worker).
const MAX_HEADER: u32 = 16 << 20;

/// Writes one frame.
pub(crate) fn write_frame(
    w: &mut impl Write,
    header: &serde_json::Value,
    payload: &[u8],
) -> std::io::Result<()> {
    let h = serde_json::to_vec(header).expect("plain JSON");
    let mut head = Vec::with_capacity(12 + h.len());
    head.extend_from_slice(&(h.len() as u32).to_le_bytes());
    head.extend_from_slice(&h);
    head.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    w.write_all(&head)?;
    w.write_all(payload)?;
    w.flush()
}

/// Reads one frame: its header and payload.
pub(crate) fn read_frame(r: &mut impl Read) -> std::io::Result<(serde_json::Value, Vec<u8>)> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let hlen = u32::from_le_bytes(len);
    if hlen > MAX_HEADER {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a header of {hlen} bytes"),
        ));
    }
    let mut h = vec![0u8; hlen as usize];
    r.read_exact(&mut h)?;
    let header = serde_json::from_slice(&h)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let mut plen = [0u8; 8];
    r.read_exact(&mut plen)?;
    let plen = usize::try_from(u64::from_le_bytes(plen))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let mut payload = Vec::new();
    r.take(plen as u64).read_to_end(&mut payload)?;
    if payload.len() != plen {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok((header, payload))
}

/// Rows (row-major, `width` columns) as an Arrow IPC stream of one batch
/// with float64 columns `x0`, `x1`, ….
pub(crate) fn encode_rows(rows: &[f64], width: usize) -> Vec<u8> {
    let width = width.max(1);
    let n = rows.len() / width;
    let fields: Vec<Field> = (0..width)
        .map(|i| Field::new(format!("x{i}"), DataType::Float64, false))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let columns: Vec<ArrayRef> = (0..width)
        .map(|c| {
            let col: Float64Array = (0..n).map(|r| Some(rows[r * width + c])).collect();
            Arc::new(col) as ArrayRef
        })
        .collect();
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns).expect("columns match");
    let mut out = Vec::with_capacity(rows.len() * 8 + 512);
    {
        let mut w = StreamWriter::try_new(&mut out, &schema).expect("a plain schema");
        w.write(&batch).expect("writing to memory");
        w.finish().expect("writing to memory");
    }
    out
}

/// The `score` and `label` columns of an answer's batch, checked to hold
/// `n` rows each.
pub(crate) fn decode_output(bytes: &[u8], n: usize) -> Result<(Vec<f64>, Vec<u32>), String> {
    let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|e| format!("an unreadable Arrow stream: {e}"))?;
    let (mut score, mut label) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for batch in reader {
        let batch = batch.map_err(|e| format!("an unreadable Arrow batch: {e}"))?;
        let s = batch
            .column_by_name("score")
            .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
            .ok_or("no float64 column `score`")?;
        let l = batch
            .column_by_name("label")
            .and_then(|c| c.as_any().downcast_ref::<UInt32Array>())
            .ok_or("no uint32 column `label`")?;
        if s.null_count() > 0 || l.null_count() > 0 {
            return Err("null values in the answer".into());
        }
        score.extend_from_slice(s.values());
        label.extend_from_slice(l.values());
    }
    if score.len() != n {
        return Err(format!("{} rows for a call of {n}", score.len()));
    }
    Ok((score, label))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &serde_json::json!({"op": "x"}), b"abc").unwrap();
        write_frame(&mut buf, &serde_json::json!({"ok": true}), b"").unwrap();
        let mut r = std::io::Cursor::new(buf);
        let (h, p) = read_frame(&mut r).unwrap();
        assert_eq!((h["op"].as_str(), p.as_slice()), (Some("x"), &b"abc"[..]));
        let (h, p) = read_frame(&mut r).unwrap();
        assert_eq!((h["ok"].as_bool(), p.len()), (Some(true), 0));
        assert_eq!(
            read_frame(&mut r).unwrap_err().kind(),
            std::io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn a_truncated_payload_is_an_error_not_a_short_read() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &serde_json::json!({}), b"abcdef").unwrap();
        buf.truncate(buf.len() - 2);
        assert!(read_frame(&mut std::io::Cursor::new(buf)).is_err());
    }

    #[test]
    fn rows_encode_column_by_column() {
        let bytes = encode_rows(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2);
        let mut reader = StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
        let batch = reader.next().unwrap().unwrap();
        assert_eq!((batch.num_rows(), batch.num_columns()), (3, 2));
        let x1 = batch
            .column(1)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert_eq!(x1.values().to_vec(), vec![2.0, 4.0, 6.0]);
    }
}
