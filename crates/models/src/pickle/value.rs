//! The values a pickle builds, the allow-list of globals, and numpy arrays.

use std::cell::RefCell;
use std::rc::Rc;

/// The scikit-learn classes fleetscore reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Estimator {
    /// `sklearn.pipeline.Pipeline`
    Pipeline,
    /// `sklearn.preprocessing.StandardScaler`
    StandardScaler,
    /// `sklearn.preprocessing.MinMaxScaler`
    MinMaxScaler,
    /// `sklearn.preprocessing.RobustScaler`
    RobustScaler,
    /// `sklearn.svm.OneClassSVM`
    OneClassSvm,
}

/// Every global a pickle may name: the allow-list. Anything else is refused
/// when the pickle names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A supported scikit-learn estimator class.
    Sklearn(Estimator),
    /// `numpy.ndarray` (the class passed to `_reconstruct`).
    NumpyNdarray,
    /// `numpy.dtype`
    NumpyDtype,
    /// `numpy.core.multiarray._reconstruct` (numpy 1) or
    /// `numpy._core.multiarray._reconstruct` (numpy 2).
    NumpyReconstruct,
    /// `numpy.core.multiarray.scalar`: a numpy scalar such as `np.float64`.
    NumpyScalar,
    /// `numpy.core.numeric._frombuffer`: arrays at pickle protocol 5.
    NumpyFrombuffer,
    /// `joblib.numpy_pickle.NumpyArrayWrapper` (also under
    /// `sklearn.externals.joblib`).
    JoblibArrayWrapper,
    /// `copyreg._reconstructor` (protocol 0 and 1 object creation).
    CopyregReconstructor,
    /// `builtins.object`
    BuiltinObject,
    /// `_codecs.encode`: bytes at protocol 2.
    CodecsEncode,
    /// `builtins.set`
    BuiltinSet,
    /// `builtins.frozenset`
    BuiltinFrozenset,
    /// `builtins.bytearray`
    BuiltinBytearray,
    /// `builtins.bytes` (how protocol 2 writes an empty `bytes`).
    BuiltinBytes,
}

impl Class {
    /// Looks a global up in the allow-list.
    pub fn resolve(module: &str, name: &str) -> Option<Class> {
        use Estimator::*;
        let c = match (module, name) {
            ("sklearn.pipeline", "Pipeline") => Class::Sklearn(Pipeline),
            (
                "sklearn.preprocessing.data"
                | "sklearn.preprocessing._data"
                | "sklearn.preprocessing",
                n,
            ) => match n {
                "StandardScaler" => Class::Sklearn(StandardScaler),
                "MinMaxScaler" => Class::Sklearn(MinMaxScaler),
                "RobustScaler" => Class::Sklearn(RobustScaler),
                _ => return None,
            },
            ("sklearn.svm.classes" | "sklearn.svm._classes" | "sklearn.svm", "OneClassSVM") => {
                Class::Sklearn(OneClassSvm)
            }
            ("numpy", "ndarray") => Class::NumpyNdarray,
            ("numpy", "dtype") => Class::NumpyDtype,
            ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => {
                Class::NumpyReconstruct
            }
            ("numpy.core.multiarray" | "numpy._core.multiarray", "scalar") => Class::NumpyScalar,
            ("numpy.core.numeric" | "numpy._core.numeric", "_frombuffer") => Class::NumpyFrombuffer,
            (
                "joblib.numpy_pickle" | "sklearn.externals.joblib.numpy_pickle",
                "NumpyArrayWrapper",
            ) => Class::JoblibArrayWrapper,
            ("copyreg" | "copy_reg", "_reconstructor") => Class::CopyregReconstructor,
            ("builtins" | "__builtin__", "object") => Class::BuiltinObject,
            ("builtins" | "__builtin__", "set") => Class::BuiltinSet,
            ("builtins" | "__builtin__", "frozenset") => Class::BuiltinFrozenset,
            ("builtins" | "__builtin__", "bytearray") => Class::BuiltinBytearray,
            ("builtins" | "__builtin__", "bytes") => Class::BuiltinBytes,
            ("_codecs", "encode") => Class::CodecsEncode,
            _ => return None,
        };
        Some(c)
    }

    /// The Python name, for messages.
    pub fn python_name(&self) -> &'static str {
        match self {
            Class::Sklearn(Estimator::Pipeline) => "sklearn.pipeline.Pipeline",
            Class::Sklearn(Estimator::StandardScaler) => "sklearn.preprocessing.StandardScaler",
            Class::Sklearn(Estimator::MinMaxScaler) => "sklearn.preprocessing.MinMaxScaler",
            Class::Sklearn(Estimator::RobustScaler) => "sklearn.preprocessing.RobustScaler",
            Class::Sklearn(Estimator::OneClassSvm) => "sklearn.svm.OneClassSVM",
            Class::NumpyNdarray => "numpy.ndarray",
            Class::NumpyDtype => "numpy.dtype",
            Class::NumpyReconstruct => "numpy.core.multiarray._reconstruct",
            Class::NumpyScalar => "numpy.core.multiarray.scalar",
            Class::NumpyFrombuffer => "numpy.core.numeric._frombuffer",
            Class::JoblibArrayWrapper => "joblib.numpy_pickle.NumpyArrayWrapper",
            Class::CopyregReconstructor => "copyreg._reconstructor",
            Class::BuiltinObject => "builtins.object",
            Class::CodecsEncode => "_codecs.encode",
            Class::BuiltinSet => "builtins.set",
            Class::BuiltinFrozenset => "builtins.frozenset",
            Class::BuiltinBytearray => "builtins.bytearray",
            Class::BuiltinBytes => "builtins.bytes",
        }
    }
}

/// An instance of an allow-listed class: what `NEWOBJ`/`REDUCE` made and
/// what `BUILD` set as its state. Nothing was executed to make it.
#[derive(Debug)]
pub struct Object {
    /// The class.
    pub class: Class,
    /// Constructor arguments.
    pub args: Vec<Value>,
    /// The state given by `BUILD` (`__dict__` or `__setstate__` argument).
    pub state: Option<Value>,
}

/// A Python value as the pickle built it.
#[derive(Debug, Clone)]
pub enum Value {
    /// `None`
    None,
    /// `bool`
    Bool(bool),
    /// `int` that fits 64 bits.
    Int(i64),
    /// `int` wider than 64 bits (little-endian two's complement).
    BigInt(Rc<[u8]>),
    /// `float`
    Float(f64),
    /// `str`
    Str(Rc<str>),
    /// `bytes` (also Python 2 `str`).
    Bytes(Rc<[u8]>),
    /// `tuple`
    Tuple(Rc<Vec<Value>>),
    /// `list`
    List(Rc<RefCell<Vec<Value>>>),
    /// `dict`, as pairs in insertion order.
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    /// `set` or `frozenset`.
    Set(Rc<RefCell<Vec<Value>>>),
    /// An allow-listed global (class or function), not yet called.
    Global(Class),
    /// An instance of an allow-listed class.
    Object(Rc<RefCell<Object>>),
    /// A numpy array read from a joblib stream.
    Array(Rc<NdArray>),
}

impl Drop for Value {
    // Dropping a deeply nested value recursively would overflow the stack;
    // a hostile pickle can nest a million lists in a few megabytes. Children
    // of containers we hold the last reference to are moved to a work list
    // instead, so every drop below this one sees empty containers.
    fn drop(&mut self) {
        let mut work = Vec::new();
        take_children(self, &mut work);
        while let Some(mut v) = work.pop() {
            take_children(&mut v, &mut work);
        }
    }
}

fn take_children(v: &mut Value, out: &mut Vec<Value>) {
    match v {
        Value::Tuple(rc) => {
            if let Some(items) = Rc::get_mut(rc) {
                out.append(items);
            }
        }
        Value::List(rc) | Value::Set(rc) if Rc::strong_count(rc) == 1 => {
            out.append(&mut rc.borrow_mut());
        }
        Value::Dict(rc) if Rc::strong_count(rc) == 1 => {
            for (k, v) in rc.borrow_mut().drain(..) {
                out.push(k);
                out.push(v);
            }
        }
        Value::Object(rc) if Rc::strong_count(rc) == 1 => {
            let mut o = rc.borrow_mut();
            out.append(&mut o.args);
            if let Some(s) = o.state.take() {
                out.push(s);
            }
        }
        Value::Array(rc) => {
            if let Some(a) = Rc::get_mut(rc) {
                if let ArrayData::Objects(items) = &mut a.data {
                    out.append(items);
                }
            }
        }
        _ => {}
    }
}

impl Value {
    pub(crate) fn tuple(items: Vec<Value>) -> Value {
        Value::Tuple(Rc::new(items))
    }
    pub(crate) fn list(items: Vec<Value>) -> Value {
        Value::List(Rc::new(RefCell::new(items)))
    }
    pub(crate) fn dict(items: Vec<(Value, Value)>) -> Value {
        Value::Dict(Rc::new(RefCell::new(items)))
    }
    pub(crate) fn set(items: Vec<Value>) -> Value {
        Value::Set(Rc::new(RefCell::new(items)))
    }
    pub(crate) fn object(class: Class, args: Vec<Value>) -> Value {
        Value::Object(Rc::new(RefCell::new(Object {
            class,
            args,
            state: None,
        })))
    }

    /// A short name of the value's type, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Set(_) => "set",
            Value::Global(_) => "class or function",
            Value::Object(_) => "object",
            Value::Array(_) => "numpy array",
        }
    }

    pub(crate) fn list_extend(
        &self,
        items: impl IntoIterator<Item = Value>,
    ) -> Result<(), &'static str> {
        match self {
            Value::List(l) => {
                l.try_borrow_mut().map_err(|_| "list in use")?.extend(items);
                Ok(())
            }
            other => Err(other.kind()),
        }
    }

    pub(crate) fn set_extend(
        &self,
        items: impl IntoIterator<Item = Value>,
    ) -> Result<(), &'static str> {
        match self {
            Value::Set(l) => {
                l.try_borrow_mut().map_err(|_| "set in use")?.extend(items);
                Ok(())
            }
            other => Err(other.kind()),
        }
    }

    pub(crate) fn dict_extend(
        &self,
        items: impl IntoIterator<Item = (Value, Value)>,
    ) -> Result<(), &'static str> {
        match self {
            Value::Dict(d) => {
                // Python keeps the last value of a repeated key; `dict_get`
                // searches from the end, so appending is enough (and keeps a
                // hostile million-key dict linear).
                d.try_borrow_mut().map_err(|_| "dict in use")?.extend(items);
                Ok(())
            }
            other => Err(other.kind()),
        }
    }

    /// The text of a `str`, or of a Python 2 byte string read as latin-1.
    pub fn as_text(&self) -> Option<String> {
        match self {
            Value::Str(s) => Some(s.to_string()),
            Value::Bytes(b) => Some(b.iter().map(|&c| char::from(c)).collect()),
            _ => None,
        }
    }

    /// Whether this is the text `key` (`str`, or latin-1 bytes), without
    /// allocating.
    pub fn text_eq(&self, key: &str) -> bool {
        match self {
            Value::Str(s) => &**s == key,
            Value::Bytes(b) => {
                b.len() <= key.len() && b.iter().map(|&c| char::from(c)).eq(key.chars())
            }
            _ => false,
        }
    }

    /// The items of a tuple.
    pub fn tuple_items(&self) -> Option<&[Value]> {
        match self {
            Value::Tuple(t) => Some(t.as_slice()),
            _ => None,
        }
    }

    /// The items of a list or tuple, cloned.
    pub fn sequence_items(&self) -> Option<Vec<Value>> {
        match self {
            Value::Tuple(t) => Some(t.to_vec()),
            Value::List(l) => l.try_borrow().ok().map(|l| l.clone()),
            _ => None,
        }
    }

    pub(crate) fn is_empty_container(&self) -> bool {
        match self {
            Value::None => true,
            Value::Tuple(t) => t.is_empty(),
            Value::Dict(d) => d.try_borrow().map(|d| d.is_empty()).unwrap_or(false),
            _ => false,
        }
    }

    /// Looks a string key up in a dict.
    pub fn dict_get(&self, key: &str) -> Option<Value> {
        match self {
            Value::Dict(d) => d
                .try_borrow()
                .ok()?
                .iter()
                .rev()
                .find(|(k, _)| k.text_eq(key))
                .map(|(_, v)| v.clone()),
            _ => None,
        }
    }

    /// A tuple (or list) of non-negative ints, as a numpy shape.
    pub fn shape(&self) -> Option<Vec<usize>> {
        self.sequence_items()?
            .iter()
            .map(|v| match v {
                Value::Int(i) => usize::try_from(*i).ok(),
                _ => None,
            })
            .collect()
    }

    /// A Python int or bool, or a numpy integer scalar.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            Value::Object(_) => {
                let a = NdArray::from_value(self).ok()?;
                if a.len() != 1 || !matches!(a.dtype.kind, 'i' | 'u' | 'b') {
                    return None;
                }
                let v = a.to_f64().ok()?[0];
                Some(v as i64)
            }
            _ => None,
        }
    }

    /// A Python float or int, or a numpy numeric scalar (or 1-element array).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            Value::Object(_) | Value::Array(_) => {
                let a = NdArray::from_value(self).ok()?;
                if a.len() != 1 {
                    return None;
                }
                Some(a.to_f64().ok()?[0])
            }
            _ => None,
        }
    }

    /// The allow-listed class of an object.
    pub fn object_class(&self) -> Option<Class> {
        match self {
            Value::Object(o) => Some(o.try_borrow().ok()?.class),
            _ => None,
        }
    }

    /// The `BUILD` state of an object.
    pub fn object_state(&self) -> Option<Value> {
        match self {
            Value::Object(o) => o.try_borrow().ok()?.state.clone(),
            _ => None,
        }
    }

    fn as_bytes(&self) -> Option<Rc<[u8]>> {
        match self {
            Value::Bytes(b) => Some(b.clone()),
            _ => None,
        }
    }
}

/// A numpy dtype, as far as fleetscore needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dtype {
    /// numpy's kind character: `f`, `i`, `u`, `b`, `O`, `U`, `S`, `V`, …
    pub kind: char,
    /// Bytes per element.
    pub itemsize: usize,
    /// Whether multi-byte elements are big-endian.
    pub big_endian: bool,
}

impl Dtype {
    /// Interprets a pickled `numpy.dtype(descr, align, copy)` object and its
    /// state `(version, byteorder, subdescr, names, fields, elsize,
    /// alignment, flags[, metadata])`.
    pub fn from_value(v: &Value) -> Result<Dtype, String> {
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
        let state = o
            .state
            .as_ref()
            .and_then(|s| s.tuple_items().map(<[Value]>::to_vec));
        let order = state
            .as_ref()
            .and_then(|s| s.get(1))
            .and_then(Value::as_text)
            .unwrap_or_else(|| "|".to_string());
        if let Some(s) = &state {
            if s.get(3).is_some_and(|n| !matches!(n, Value::None)) {
                return Err(format!("structured numpy dtype {descr:?} is not supported"));
            }
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
        let elsize = state.as_ref().and_then(|s| s.get(5)).and_then(|e| match e {
            Value::Int(i) if *i > 0 => usize::try_from(*i).ok(),
            _ => None,
        });
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
        })
    }
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
                let data = buf.as_bytes().ok_or("numpy _frombuffer without a buffer")?;
                let shape = shape
                    .shape()
                    .ok_or("numpy array shape is not a tuple of ints")?;
                let fortran = order.as_text().as_deref() == Some("F");
                NdArray {
                    shape,
                    fortran,
                    dtype: Dtype::from_value(dtype)?,
                    data: ArrayData::Raw(data),
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

    fn check(&self) -> Result<(), String> {
        let count = self
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or("numpy array shape overflows")?;
        match &self.data {
            ArrayData::Raw(b) => {
                if self.dtype.kind == 'O' {
                    return Err("numpy object array stored as raw bytes".into());
                }
                let want = count
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

    /// The elements as f64, in C (row-major) order. Integer and boolean
    /// dtypes convert exactly where f64 can hold the value.
    pub fn to_f64(&self) -> Result<Vec<f64>, String> {
        let ArrayData::Raw(b) = &self.data else {
            return Err("expected a numeric numpy array, found an object array".into());
        };
        let d = &self.dtype;
        let n = d.itemsize;
        let numeric = match d.kind {
            'f' => matches!(n, 4 | 8),
            'i' | 'u' => matches!(n, 1 | 2 | 4 | 8),
            'b' => n == 1,
            _ => false,
        };
        if !numeric {
            return Err(format!(
                "numpy dtype {}{} is not a supported numeric type",
                d.kind, d.itemsize
            ));
        }
        let conv = |c: &[u8]| -> Option<f64> {
            let mut a = [0u8; 8];
            if d.big_endian {
                a[..n].copy_from_slice(c);
                a[..n].reverse();
            } else {
                a[..n].copy_from_slice(c);
            }
            Some(match (d.kind, n) {
                ('f', 8) => f64::from_le_bytes(a),
                ('f', 4) => f64::from(f32::from_le_bytes([a[0], a[1], a[2], a[3]])),
                ('i', 1) => f64::from(a[0] as i8),
                ('i', 2) => f64::from(i16::from_le_bytes([a[0], a[1]])),
                ('i', 4) => f64::from(i32::from_le_bytes([a[0], a[1], a[2], a[3]])),
                ('i', 8) => i64::from_le_bytes(a) as f64,
                ('u', 1) | ('b', 1) => f64::from(a[0]),
                ('u', 2) => f64::from(u16::from_le_bytes([a[0], a[1]])),
                ('u', 4) => f64::from(u32::from_le_bytes([a[0], a[1], a[2], a[3]])),
                ('u', 8) => u64::from_le_bytes(a) as f64,
                _ => return None,
            })
        };
        let flat: Option<Vec<f64>> = b.chunks_exact(n.max(1)).map(conv).collect();
        let flat =
            flat.ok_or_else(|| format!("numpy dtype {}{} is not numeric", d.kind, d.itemsize))?;
        if self.fortran && self.shape.len() == 2 {
            let (r, c) = (self.shape[0], self.shape[1]);
            let mut out = vec![0.0; flat.len()];
            for j in 0..c {
                for i in 0..r {
                    out[i * c + j] = flat[j * r + i];
                }
            }
            return Ok(out);
        }
        if self.fortran && self.shape.iter().filter(|&&d| d > 1).count() > 1 {
            return Err(
                "Fortran-ordered arrays of more than 2 dimensions are not supported".into(),
            );
        }
        Ok(flat)
    }
}

fn latin1(s: &str) -> Result<Vec<u8>, String> {
    s.chars()
        .map(|c| {
            u8::try_from(u32::from(c)).map_err(|_| "array data text is not latin-1".to_string())
        })
        .collect()
}
