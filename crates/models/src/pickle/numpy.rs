//! numpy dtypes and arrays as a pickle describes them, and typed views of
//! their elements.
//!
//! Three pickled forms make an array: `_reconstruct` with a state tuple
//! (protocols 2–4), `_frombuffer` (protocol 5) and joblib's
//! `NumpyArrayWrapper` (read by the machine in `mod.rs`). All of them end in
//! an [`NdArray`] whose raw bytes were checked to be exactly
//! `len × itemsize` long, and every typed accessor checks it again before
//! it reads or allocates, so a hostile shape or item size is an error, never
//! a panic or a huge allocation.
//!
//! Record (structured) dtypes are read for what scikit-learn stores in them:
//! the nodes of a `Tree`, of a histogram-gradient-boosting `TreePredictor`
//! and of a `KDTree`/`BallTree`. A record dtype is a flat list of numeric
//! [`Field`]s, each with its own byte order and offset; nested records,
//! subarray fields and Python objects inside records are refused, because
//! no supported model has them.

use std::rc::Rc;

use super::pyfloat::{numpy_f32_str, py_float_repr, python_int_str};
use super::value::{Class, Value};

/// The most fields a record dtype may have. scikit-learn's largest, the
/// histogram gradient boosting predictor node, has 13.
pub const MAX_FIELDS: usize = 64;

/// A numpy dtype, as far as fleetscore needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dtype {
    /// numpy's kind character: `f`, `i`, `u`, `b`, `O`, `U`, `S`, `V`, …
    /// `V` only for record dtypes (with [`Dtype::fields`]); an unstructured
    /// void dtype reads as `S` (raw bytes).
    pub kind: char,
    /// Bytes per element.
    pub itemsize: usize,
    /// Whether multi-byte elements are big-endian.
    pub big_endian: bool,
    /// The fields of a record dtype, in the order numpy lists them.
    pub fields: Option<Rc<[Field]>>,
}

/// One field of a record dtype.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The field's name.
    pub name: String,
    /// Its dtype: plain (never a record), with its own byte order.
    pub dtype: Dtype,
    /// Byte offset of the field inside a record.
    pub offset: usize,
}

impl Dtype {
    /// Interprets a pickled `numpy.dtype(descr, align, copy)` object and its
    /// state `(version, byteorder, subdescr, names, fields, elsize,
    /// alignment, flags[, metadata])`.
    pub fn from_value(v: &Value) -> Result<Dtype, String> {
        Self::parse(v, true)
    }

    /// numpy's short name for messages: `<f8`, `|u1`, `V64`.
    pub fn describe(&self) -> String {
        match self.kind {
            'V' | 'O' => format!("{}{}", self.kind, self.itemsize),
            _ if self.itemsize <= 1 => format!("|{}{}", self.kind, self.itemsize),
            _ => {
                let order = if self.big_endian { '>' } else { '<' };
                format!("{order}{}{}", self.kind, self.itemsize)
            }
        }
    }

    /// `record` says whether a record dtype is acceptable here: it is at
    /// the top level, not inside another record. The parse of a field never
    /// recurses further, so a hostile chain of nested records costs one
    /// level of stack.
    fn parse(v: &Value, record: bool) -> Result<Dtype, String> {
        let Value::Object(o) = v else {
            return Err(format!("expected a numpy dtype, found {}", v.kind()));
        };
        let o = o.try_borrow().map_err(|_| "dtype in use".to_string())?;
        if o.class != Class::NumpyDtype {
            return Err(format!(
                "expected a numpy dtype, found {}",
                o.class.python_name()
            ));
        }
        let descr = o
            .args
            .first()
            .and_then(Value::as_text)
            .ok_or("numpy dtype without a type string")?;
        let state = o.state.as_ref().and_then(|s| s.tuple_items());
        let item = |i: usize| state.and_then(|s| s.get(i));
        let order = item(1)
            .and_then(Value::as_text)
            .unwrap_or_else(|| "|".to_string());
        if item(2).is_some_and(|s| !matches!(s, Value::None)) {
            return Err(format!(
                "numpy subarray dtype {descr:?} (a field holding a fixed-size array) is not supported"
            ));
        }
        let elsize = item(5).and_then(|e| match e {
            Value::Int(i) if *i > 0 => usize::try_from(*i).ok(),
            _ => None,
        });
        if let Some(names) = item(3).filter(|n| !matches!(n, Value::None)) {
            if !record {
                return Err(format!(
                    "nested numpy record dtype {descr:?} (a record field that is itself a record) is not supported"
                ));
            }
            let elsize = elsize.ok_or_else(|| {
                format!("numpy record dtype {descr:?} has no size (elsize 0 or missing)")
            })?;
            let fields = item(4).ok_or_else(|| {
                format!("numpy record dtype {descr:?} names fields but has no field table")
            })?;
            let fields = parse_fields(&descr, names, fields, elsize)?;
            return Ok(Dtype {
                kind: 'V',
                itemsize: elsize,
                big_endian: false,
                fields: Some(fields),
            });
        }
        let mut chars = descr.chars();
        let kind = chars.next().ok_or("empty numpy dtype string")?;
        let digits: String = chars.collect();
        let declared: usize = if digits.is_empty() {
            match kind {
                'O' => 8,
                '?' => 1,
                _ => return Err(format!("numpy dtype {descr:?} has no size")),
            }
        } else {
            digits
                .parse()
                .map_err(|_| format!("numpy dtype {descr:?} is not understood"))?
        };
        let (kind, itemsize) = match kind {
            'f' | 'i' | 'u' | 'c' | 'M' | 'm' => (kind, declared),
            'b' | '?' => ('b', 1),
            'O' => ('O', 8),
            'U' => ('U', elsize.unwrap_or(declared.saturating_mul(4))),
            'S' | 'a' | 'V' => ('S', elsize.unwrap_or(declared)),
            _ => return Err(format!("numpy dtype {descr:?} is not supported")),
        };
        if itemsize == 0 && kind != 'U' && kind != 'S' {
            return Err(format!("numpy dtype {descr:?} has size 0"));
        }
        Ok(Dtype {
            kind,
            itemsize,
            big_endian: order == ">",
            fields: None,
        })
    }
}

/// Reads `names` (a tuple of str) and `fields` (a dict
/// `{name: (dtype, offset[, title])}`) of a record dtype `elsize` bytes
/// wide. A field with a title is in the dict twice, under its name and its
/// title; only the names count.
fn parse_fields(
    descr: &str,
    names: &Value,
    table: &Value,
    elsize: usize,
) -> Result<Rc<[Field]>, String> {
    let names = names
        .tuple_items()
        .ok_or_else(|| format!("numpy record dtype {descr:?}: field names are not a tuple"))?;
    if names.is_empty() {
        return Err(format!("numpy record dtype {descr:?} has no fields"));
    }
    if names.len() > MAX_FIELDS {
        return Err(format!(
            "numpy record dtype {descr:?} has {} fields, more than the {MAX_FIELDS} fleetscore reads",
            names.len()
        ));
    }
    // Each name is looked up in the table, so a table padded with a million
    // entries would make every parse of a shared dtype slow; a real one has
    // an entry per name and one per title.
    let entries = match table {
        Value::Dict(d) => d.try_borrow().map(|d| d.len()).unwrap_or(usize::MAX),
        _ => usize::MAX,
    };
    if entries > 2 * names.len() {
        return Err(format!(
            "numpy record dtype {descr:?}: the field table has {} entries for {} fields",
            if entries == usize::MAX {
                "no".to_string()
            } else {
                entries.to_string()
            },
            names.len()
        ));
    }
    let mut fields: Vec<Field> = Vec::with_capacity(names.len());
    for name in names {
        let name = name
            .as_text()
            .ok_or_else(|| format!("numpy record dtype {descr:?}: a field name is not a str"))?;
        if fields.iter().any(|f| f.name == name) {
            return Err(format!(
                "numpy record dtype {descr:?}: field `{name}` is named twice"
            ));
        }
        let entry = table.dict_get(&name).ok_or_else(|| {
            format!("numpy record dtype {descr:?}: field `{name}` is missing from the field table")
        })?;
        let parts = entry.tuple_items().unwrap_or_default();
        let (Some(dtype), Some(offset), 2..=3) = (parts.first(), parts.get(1), parts.len()) else {
            return Err(format!(
                "numpy record dtype {descr:?}: field `{name}` is not (dtype, offset[, title])"
            ));
        };
        let dtype = Dtype::parse(dtype, false)
            .map_err(|e| format!("numpy record dtype {descr:?}, field `{name}`: {e}"))?;
        if dtype.kind == 'O' {
            return Err(format!(
                "numpy record dtype {descr:?}: field `{name}` holds Python objects, which no supported model stores in a record"
            ));
        }
        let offset = match offset {
            Value::Int(i) => usize::try_from(*i).ok(),
            _ => None,
        }
        .ok_or_else(|| {
            format!("numpy record dtype {descr:?}: field `{name}` has no valid offset")
        })?;
        let end = offset.checked_add(dtype.itemsize).filter(|&e| e <= elsize);
        if end.is_none() {
            return Err(format!(
                "numpy record dtype {descr:?}: field `{name}` ({} bytes at offset {offset}) ends past the record's {elsize} bytes",
                dtype.itemsize
            ));
        }
        fields.push(Field {
            name,
            dtype,
            offset,
        });
    }
    let mut by_offset: Vec<&Field> = fields.iter().collect();
    by_offset.sort_by_key(|f| (f.offset, f.dtype.itemsize));
    for w in by_offset.windows(2) {
        // Ends were checked above, so this cannot overflow.
        if w[0].offset + w[0].dtype.itemsize > w[1].offset {
            return Err(format!(
                "numpy record dtype {descr:?}: fields `{}` and `{}` overlap",
                w[0].name, w[1].name
            ));
        }
    }
    Ok(Rc::from(fields))
}

/// The elements of an array.
#[derive(Debug, Clone)]
pub enum ArrayData {
    /// Raw element bytes, in the array's order.
    Raw(Rc<[u8]>),
    /// Python objects (dtype `O`), in C order.
    Objects(Vec<Value>),
}

/// A numpy array.
#[derive(Debug, Clone)]
pub struct NdArray {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Whether `Raw` data is in Fortran (column-major) order.
    pub fortran: bool,
    /// Element type.
    pub dtype: Dtype,
    /// Elements.
    pub data: ArrayData,
}

/// One numeric element, widened without loss.
#[derive(Debug, Clone, Copy)]
enum Scalar {
    Int(i64),
    UInt(u64),
    Float(f64),
    /// A `float32`, kept apart because numpy prints it with its own
    /// shortest digits.
    Float32(f32),
    Bool(bool),
}

impl Scalar {
    /// Reads one element of a numeric dtype from exactly `itemsize` bytes.
    fn read(d: &Dtype, c: &[u8]) -> Option<Scalar> {
        let n = d.itemsize;
        if c.len() != n || n > 8 {
            return None;
        }
        let mut a = [0u8; 8];
        a[..n].copy_from_slice(c);
        if d.big_endian {
            a[..n].reverse();
        }
        // Sign-extend signed integers narrower than 8 bytes.
        if d.kind == 'i' && n < 8 && a[n - 1] & 0x80 != 0 {
            a[n..].fill(0xff);
        }
        Some(match (d.kind, n) {
            ('f', 8) => Scalar::Float(f64::from_le_bytes(a)),
            ('f', 4) => Scalar::Float32(f32::from_le_bytes([a[0], a[1], a[2], a[3]])),
            ('i', 1 | 2 | 4 | 8) => Scalar::Int(i64::from_le_bytes(a)),
            ('u', 1 | 2 | 4 | 8) => Scalar::UInt(u64::from_le_bytes(a)),
            ('b', 1) => Scalar::Bool(a[0] != 0),
            _ => return None,
        })
    }

    fn is_readable(d: &Dtype) -> bool {
        match d.kind {
            'f' => matches!(d.itemsize, 4 | 8),
            'i' | 'u' => matches!(d.itemsize, 1 | 2 | 4 | 8),
            'b' => d.itemsize == 1,
            _ => false,
        }
    }

    /// As f64, rounding integers beyond 2^53 to the nearest.
    fn to_f64_lossy(self) -> f64 {
        match self {
            Scalar::Int(i) => i as f64,
            Scalar::UInt(u) => u as f64,
            Scalar::Float(f) => f,
            Scalar::Float32(f) => f64::from(f),
            Scalar::Bool(b) => f64::from(u8::from(b)),
        }
    }

    /// As f64, refusing integers f64 cannot hold exactly.
    fn to_f64_exact(self) -> Result<f64, String> {
        const LIMIT: u64 = 1 << 53;
        match self {
            Scalar::Int(i) if i.unsigned_abs() < LIMIT => Ok(i as f64),
            Scalar::UInt(u) if u < LIMIT => Ok(u as f64),
            Scalar::Int(i) => Err(format!("integer {i} is too large for a float")),
            Scalar::UInt(u) => Err(format!("integer {u} is too large for a float")),
            other => Ok(other.to_f64_lossy()),
        }
    }

    fn to_i64(self) -> Result<i64, String> {
        match self {
            Scalar::Int(i) => Ok(i),
            Scalar::UInt(u) => {
                i64::try_from(u).map_err(|_| format!("unsigned integer {u} does not fit an i64"))
            }
            Scalar::Bool(b) => Ok(i64::from(b)),
            Scalar::Float(_) | Scalar::Float32(_) => {
                Err("a float where an integer is expected".into())
            }
        }
    }

    /// `str(x)` of the numpy scalar.
    fn to_str(self) -> String {
        match self {
            Scalar::Int(i) => i.to_string(),
            Scalar::UInt(u) => u.to_string(),
            Scalar::Float(f) => py_float_repr(f),
            Scalar::Float32(f) => numpy_f32_str(f),
            Scalar::Bool(b) => if b { "True" } else { "False" }.to_string(),
        }
    }
}

impl NdArray {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Interprets a pickled array: a joblib array, a `_reconstruct` object
    /// with its state, a `_frombuffer` call, or a numpy scalar.
    pub fn from_value(v: &Value) -> Result<NdArray, String> {
        let o = match v {
            Value::Array(a) => return Ok((**a).clone()),
            Value::Object(o) => o.try_borrow().map_err(|_| "array in use".to_string())?,
            other => return Err(format!("expected a numpy array, found {}", other.kind())),
        };
        let array = match o.class {
            Class::NumpyReconstruct => {
                let state = o.state.as_ref().ok_or("numpy array without state")?;
                let s = state
                    .tuple_items()
                    .ok_or("numpy array state is not a tuple")?;
                // (version, shape, dtype, is_fortran, data); very old numpy
                // omitted the version.
                let s = if s.len() == 5 { &s[1..] } else { s };
                let [shape, dtype, fortran, data] = s else {
                    return Err("numpy array state has an unexpected length".into());
                };
                let shape = shape
                    .shape()
                    .ok_or("numpy array shape is not a tuple of ints")?;
                let dtype = Dtype::from_value(dtype)?;
                let fortran = matches!(fortran, Value::Bool(true) | Value::Int(1));
                let data = match data {
                    Value::Bytes(b) => ArrayData::Raw(b.clone()),
                    Value::Str(s) => ArrayData::Raw(Rc::from(latin1(s)?.as_slice())),
                    Value::List(_) => ArrayData::Objects(data.sequence_items().unwrap_or_default()),
                    other => return Err(format!("numpy array data is a {}", other.kind())),
                };
                NdArray {
                    shape,
                    fortran,
                    dtype,
                    data,
                }
            }
            Class::NumpyFrombuffer => {
                let [buf, dtype, shape, order] = &o.args[..] else {
                    return Err("numpy _frombuffer with unexpected arguments".into());
                };
                let Value::Bytes(data) = buf else {
                    return Err("numpy _frombuffer without a buffer".into());
                };
                let shape = shape
                    .shape()
                    .ok_or("numpy array shape is not a tuple of ints")?;
                let fortran = order.as_text().as_deref() == Some("F");
                NdArray {
                    shape,
                    fortran,
                    dtype: Dtype::from_value(dtype)?,
                    data: ArrayData::Raw(data.clone()),
                }
            }
            Class::NumpyScalar => {
                let dtype = o.args.first().ok_or("numpy scalar without a dtype")?;
                let dtype = Dtype::from_value(dtype)?;
                let data = match o.args.get(1) {
                    Some(Value::Bytes(b)) => ArrayData::Raw(b.clone()),
                    Some(Value::Str(s)) => ArrayData::Raw(Rc::from(latin1(s)?.as_slice())),
                    Some(other) if dtype.kind == 'O' => ArrayData::Objects(vec![other.clone()]),
                    _ => return Err("numpy scalar without data".into()),
                };
                NdArray {
                    shape: vec![],
                    fortran: false,
                    dtype,
                    data,
                }
            }
            other => {
                return Err(format!(
                    "expected a numpy array, found {}",
                    other.python_name()
                ))
            }
        };
        array.check()?;
        Ok(array)
    }

    /// Number of elements, refusing a shape whose product overflows.
    fn count(&self) -> Result<usize, String> {
        self.shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| "numpy array shape overflows".to_string())
    }

    /// The raw bytes, checked to be exactly `len × itemsize` long.
    fn raw(&self) -> Result<&[u8], String> {
        let ArrayData::Raw(b) = &self.data else {
            return Err("expected a numeric numpy array, found an object array".into());
        };
        let want = self
            .count()?
            .checked_mul(self.dtype.itemsize)
            .ok_or("numpy array size overflows")?;
        if b.len() != want {
            return Err(format!(
                "numpy array of shape {:?} and {} bytes per element needs {want} bytes, found {}",
                self.shape,
                self.dtype.itemsize,
                b.len()
            ));
        }
        Ok(b)
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        let count = self.count()?;
        match &self.data {
            ArrayData::Raw(_) => {
                if self.dtype.kind == 'O' {
                    return Err("numpy object array stored as raw bytes".into());
                }
                self.raw()?;
            }
            ArrayData::Objects(items) => {
                if items.len() != count {
                    return Err(format!(
                        "numpy object array of shape {:?} has {} items",
                        self.shape,
                        items.len()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Puts elements read in storage order into C (row-major) order.
    fn to_c_order<T: Clone>(&self, flat: Vec<T>) -> Result<Vec<T>, String> {
        if !self.fortran || self.shape.iter().filter(|&&d| d > 1).count() <= 1 {
            return Ok(flat);
        }
        if self.shape.len() != 2 {
            return Err(
                "Fortran-ordered arrays of more than 2 dimensions are not supported".into(),
            );
        }
        let (r, c) = (self.shape[0], self.shape[1]);
        let mut out = Vec::with_capacity(flat.len());
        for i in 0..r {
            for j in 0..c {
                out.push(flat[j * r + i].clone());
            }
        }
        Ok(out)
    }

    /// The elements of a numeric array, in storage order.
    fn scalars(&self) -> Result<Vec<Scalar>, String> {
        let b = self.raw()?;
        let d = &self.dtype;
        if !Scalar::is_readable(d) {
            return Err(format!(
                "numpy dtype {} is not a supported numeric type",
                d.describe()
            ));
        }
        b.chunks_exact(d.itemsize)
            .map(|c| Scalar::read(d, c))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| format!("numpy dtype {} is not numeric", d.describe()))
    }

    /// The elements as f64, in C (row-major) order. Integer and boolean
    /// dtypes convert exactly where f64 can hold the value.
    pub fn to_f64(&self) -> Result<Vec<f64>, String> {
        let flat = self
            .scalars()?
            .into_iter()
            .map(Scalar::to_f64_lossy)
            .collect();
        self.to_c_order(flat)
    }

    /// The elements of an integer or boolean array as i64, in C order.
    /// Every value converts exactly; a `uint64` above `i64::MAX` and a
    /// float dtype are refused.
    pub fn to_i64(&self) -> Result<Vec<i64>, String> {
        if !matches!(self.dtype.kind, 'i' | 'u' | 'b') {
            return Err(format!(
                "expected an integer numpy array, found dtype {}",
                self.dtype.describe()
            ));
        }
        let flat = self
            .scalars()?
            .into_iter()
            .map(Scalar::to_i64)
            .collect::<Result<Vec<_>, _>>()?;
        self.to_c_order(flat)
    }

    /// The items of an object array (dtype `O`), in C order whatever the
    /// array's `fortran` flag (numpy pickles object arrays as a list in C
    /// order); its shape is [`NdArray::shape`]. `None` for other arrays.
    pub fn objects(&self) -> Option<&[Value]> {
        match &self.data {
            ArrayData::Objects(items) => Some(items),
            ArrayData::Raw(_) => None,
        }
    }

    /// Whether the array has a record dtype with a field called `name`.
    pub fn has_field(&self, name: &str) -> bool {
        self.dtype
            .fields
            .as_ref()
            .is_some_and(|f| f.iter().any(|f| f.name == name))
    }

    /// Reads field `name` of every record, in C order, with `conv`.
    fn field_values<T: Clone>(
        &self,
        name: &str,
        conv: impl Fn(Scalar) -> Result<T, String>,
    ) -> Result<Vec<T>, String> {
        let fields = self.dtype.fields.as_ref().ok_or_else(|| {
            format!(
                "expected a numpy record array with field `{name}`, found dtype {}",
                self.dtype.describe()
            )
        })?;
        let field = fields.iter().find(|f| f.name == name).ok_or_else(|| {
            let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
            format!(
                "numpy record array has no field `{name}` (its fields: {})",
                names.join(", ")
            )
        })?;
        if !Scalar::is_readable(&field.dtype) {
            return Err(format!(
                "field `{name}` has dtype {}, which is not a supported numeric type",
                field.dtype.describe()
            ));
        }
        let b = self.raw()?;
        let size = self.dtype.itemsize;
        let (start, width) = (field.offset, field.dtype.itemsize);
        // `raw` checked len × itemsize == b.len() and the dtype parse checked
        // offset + width <= itemsize, so every slice below is in bounds.
        let flat = b
            .chunks_exact(size)
            .map(|rec| {
                let s = Scalar::read(&field.dtype, &rec[start..start + width])
                    .ok_or_else(|| format!("field `{name}` cannot be read"))?;
                conv(s).map_err(|e| format!("field `{name}`: {e}"))
            })
            .collect::<Result<Vec<T>, String>>()?;
        self.to_c_order(flat)
    }

    /// Field `name` of a record array as f64, in C order: float fields of
    /// any byte order, integer and boolean fields converted exactly (an
    /// integer of magnitude 2^53 or more is refused).
    pub fn field_f64(&self, name: &str) -> Result<Vec<f64>, String> {
        self.field_values(name, Scalar::to_f64_exact)
    }

    /// Field `name` of a record array as i64, in C order: integer fields of
    /// 1 to 8 bytes and any byte order, booleans as 0/1; a `uint64` above
    /// `i64::MAX` and float fields are refused.
    pub fn field_i64(&self, name: &str) -> Result<Vec<i64>, String> {
        self.field_values(name, Scalar::to_i64)
    }

    /// The elements as Python's `str(x)` prints each, in C order: the
    /// labels of a classifier's `classes_`.
    ///
    /// - `U` (numpy unicode, UTF-32 of the dtype's byte order) and `S`
    ///   (bytes, read as latin-1): the text without its trailing NULs, as
    ///   numpy returns it.
    /// - integers in decimal; `float64` as Python's `repr` (`1.0`, `0.1`,
    ///   `1e+16`, `nan`); `float32` as numpy prints it; booleans
    ///   `True`/`False`.
    /// - object arrays of `str`, `int`, `float`, `bool` and numpy scalars
    ///   of the kinds above.
    pub fn to_strings(&self) -> Result<Vec<String>, String> {
        let flat = match &self.data {
            ArrayData::Objects(items) => {
                // Object items are already in C order.
                return items.iter().map(object_str).collect();
            }
            ArrayData::Raw(_) => match self.dtype.kind {
                'U' => self.texts(utf32)?,
                'S' => self.texts(|c, _| Ok(c.iter().map(|&b| char::from(b)).collect()))?,
                _ => self.scalars()?.into_iter().map(Scalar::to_str).collect(),
            },
        };
        self.to_c_order(flat)
    }

    /// The elements of a text array, each decoded by `decode` from its
    /// bytes without trailing NULs.
    fn texts(
        &self,
        decode: impl Fn(&[u8], bool) -> Result<String, String>,
    ) -> Result<Vec<String>, String> {
        let b = self.raw()?;
        let (size, unit) = (
            self.dtype.itemsize,
            if self.dtype.kind == 'U' { 4 } else { 1 },
        );
        if size == 0 {
            // Zero bytes cannot bound the count, so do not allocate from it.
            return match self.count()? {
                0 => Ok(Vec::new()),
                n => Err(format!(
                    "numpy text array of {n} elements of width 0 (no real model has one)"
                )),
            };
        }
        if size % unit != 0 {
            return Err(format!(
                "numpy unicode dtype of {size} bytes per element is not a whole number of characters"
            ));
        }
        b.chunks_exact(size)
            .map(|c| {
                let mut end = c.len();
                while end >= unit && c[end - unit..end].iter().all(|&x| x == 0) {
                    end -= unit;
                }
                decode(&c[..end], self.dtype.big_endian)
            })
            .collect()
    }
}

fn utf32(c: &[u8], big_endian: bool) -> Result<String, String> {
    c.chunks_exact(4)
        .map(|u| {
            let a = [u[0], u[1], u[2], u[3]];
            let v = if big_endian {
                u32::from_be_bytes(a)
            } else {
                u32::from_le_bytes(a)
            };
            char::from_u32(v)
                .ok_or_else(|| format!("numpy unicode text holds U+{v:X}, not a character"))
        })
        .collect()
}

/// `str(x)` of one item of an object array.
fn object_str(v: &Value) -> Result<String, String> {
    Ok(match v {
        Value::Str(s) => s.to_string(),
        // A Python 2 `str`, which Python 3 reads as latin-1 text.
        Value::Bytes(_) => v.as_text().unwrap_or_default(),
        Value::Int(i) => i.to_string(),
        Value::BigInt(b) => python_int_str(b)?,
        Value::Float(f) => py_float_repr(*f),
        Value::Bool(b) => if *b { "True" } else { "False" }.to_string(),
        Value::Object(_) if v.object_class() == Some(Class::NumpyScalar) => {
            let a = NdArray::from_value(v)?;
            if a.dtype.kind == 'O' {
                return Err("a numpy object scalar inside an object array".into());
            }
            let mut s = a.to_strings()?;
            match (s.pop(), s.is_empty()) {
                (Some(one), true) => one,
                _ => return Err("a numpy scalar that is not one element".into()),
            }
        }
        other => {
            return Err(format!(
                "an object array item of type {} has no label text",
                other.kind()
            ))
        }
    })
}

pub(crate) fn latin1(s: &str) -> Result<Vec<u8>, String> {
    s.chars()
        .map(|c| {
            u8::try_from(u32::from(c)).map_err(|_| "array data text is not latin-1".to_string())
        })
        .collect()
}
