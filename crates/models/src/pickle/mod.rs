//! A restricted pickle interpreter: reads pickles without executing them.
//!
//! Python's pickle format is a small stack machine whose `GLOBAL` and
//! `REDUCE` opcodes import and call arbitrary Python functions; that is why
//! loading an untrusted pickle in Python can run any code. This module runs
//! the same machine with two differences that make it safe:
//!
//! * `GLOBAL`/`STACK_GLOBAL` resolve a name only if it is on an explicit
//!   allow-list ([`Class`]); any other name (`os.system`, `builtins.eval`,
//!   …) stops the load with [`PickleError::RefusedGlobal`] naming it, before
//!   anything could be called.
//! * `REDUCE`, `NEWOBJ` and `BUILD` never call anything. They record the
//!   allow-listed class with its arguments and state as an [`Object`], which
//!   the scikit-learn translator ([`crate::sklearn`]) interprets into native
//!   structs afterwards.
//!
//! `joblib.dump` files are pickles in which each numpy array is a
//! `NumpyArrayWrapper` object followed by the array's raw bytes in the
//! stream; `BUILD` on such a wrapper reads those bytes, as joblib's own
//! unpickler does. Compressed joblib files (zlib, gzip) are decompressed
//! first by [`crate::sklearn::decompress`].
//!
//! Every length is checked against the bytes that remain before anything is
//! allocated, so a corrupt or hostile file ends in an error, never a panic or
//! an out-of-memory abort. Values are reference counted (pickles share
//! objects through the memo) and dropped iteratively, so deeply nested input
//! cannot overflow the stack.

mod allow;
mod numpy;
mod pyfloat;
pub(crate) mod value;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

pub use pyfloat::py_float_repr;
pub use value::{ArrayData, Class, Dtype, Estimator, Field, NdArray, Object, Value};

/// Largest memo index accepted (a pickle's memo is a dense table in
/// practice; this bounds the map a hostile file can make us build).
const MAX_MEMO: u32 = 1 << 24;

/// Why a pickle could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PickleError {
    /// The file ended in the middle of an opcode or before `STOP`.
    #[error("the pickle is truncated: it ends at byte {offset} inside {what} (the file is incomplete or was cut while copying)")]
    Truncated {
        /// Byte offset where more input was needed.
        offset: usize,
        /// What was being read.
        what: &'static str,
    },
    /// A byte that is not a pickle opcode.
    #[error(
        "byte {offset}: 0x{byte:02x} is not a pickle opcode (the file is corrupt or not a pickle)"
    )]
    UnknownOpcode {
        /// Byte offset of the opcode.
        offset: usize,
        /// The byte.
        byte: u8,
    },
    /// A global that is not on the allow-list.
    #[error("refused global `{module}.{name}` at byte {offset}{note}: fleetscore never executes pickled code and only reads scikit-learn models made of {supported}; this name is not one of them")]
    RefusedGlobal {
        /// Byte offset of the `GLOBAL`/`STACK_GLOBAL` opcode.
        offset: usize,
        /// Python module.
        module: String,
        /// Name inside the module.
        name: String,
        /// Human-readable list of what is supported.
        supported: &'static str,
        /// Where the name was found, when that helps: the function of a
        /// `FunctionTransformer`.
        note: &'static str,
    },
    /// A scikit-learn (or other estimator) class that fleetscore does not
    /// evaluate yet.
    #[error("unsupported scikit-learn class `{module}.{name}`: fleetscore supports {supported}")]
    UnsupportedClass {
        /// Python module.
        module: String,
        /// Class name.
        name: String,
        /// Human-readable list of what is supported.
        supported: &'static str,
    },
    /// A valid opcode that fleetscore does not implement (for example
    /// persistent ids or out-of-band buffers).
    #[error("byte {offset}: opcode {opcode} is not supported: {reason}")]
    UnsupportedOpcode {
        /// Byte offset of the opcode.
        offset: usize,
        /// Opcode name.
        opcode: &'static str,
        /// Why it cannot be read.
        reason: &'static str,
    },
    /// Building the pickle's values would take more memory than the
    /// import limit allows (a small file of cheap opcodes, each making a
    /// list, an object or a memo entry, can ask for gigabytes).
    #[error("byte {offset}: the pickle builds more than {limit} bytes of values, more than the model size limit allows (refused as a likely memory bomb); if the model is genuine, raise the model size limit in fleetscore's configuration")]
    TooLarge {
        /// Byte offset of the opcode that passed the limit.
        offset: usize,
        /// Bytes the interpreter may allocate.
        limit: usize,
    },
    /// The opcodes are individually valid but do not form a sensible pickle.
    #[error("byte {offset}: malformed pickle: {reason}")]
    Malformed {
        /// Byte offset of the opcode.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Names of the supported estimators, for error messages.
pub const SUPPORTED: &str = "Pipeline; the outlier detectors OneClassSVM, IsolationForest, LocalOutlierFactor (novelty=True), EllipticEnvelope and SGDOneClassSVM; \
the regressors and classifiers DecisionTree, ExtraTree, RandomForest, ExtraTrees, GradientBoosting, HistGradientBoosting, LinearRegression, Ridge, Lasso, ElasticNet, SGDRegressor, LogisticRegression, SGDClassifier, LinearSVC, LinearSVR, SVC, NuSVC, SVR and NuSVR; \
the steps StandardScaler, MinMaxScaler, RobustScaler, MaxAbsScaler, Normalizer, Binarizer, SimpleImputer, PCA, PolynomialFeatures, QuantileTransformer and PowerTransformer; with numpy arrays";

/// Reads one pickle from `data` and returns its value.
///
/// `data` may hold bytes after the pickle's `STOP` (they are ignored), as in
/// a joblib file whose last array follows the last opcode it belongs to.
///
/// A pickle whose objects form a reference cycle (a list appended to
/// itself, an object whose state holds the object, …) is refused: values are
/// reference counted, so a cycle would never be freed. No supported model
/// has one.
pub fn load(data: &[u8]) -> Result<Value, PickleError> {
    load_with_limit(
        data,
        crate::sklearn::ImportLimits::default().max_heap_bytes(),
    )
}

/// As [`load`], allocating at most about `max_heap_bytes` for the values
/// it builds. The cost of every opcode is estimated (generously: stack
/// slot, container, memo entry, copied bytes) and charged before the
/// allocation, and never refunded, so the bound holds whatever the file
/// does.
pub fn load_with_limit(data: &[u8], max_heap_bytes: usize) -> Result<Value, PickleError> {
    let mut m = Machine::new(data, 0, 0, max_heap_bytes);
    let result = m.run();
    let end = m.pos;
    let mutated = std::mem::take(&mut m.mutated);
    drop(m);
    if !has_cycle(&mutated) {
        return result;
    }
    // Every cycle runs through a container filled after it was made, so
    // emptying those frees everything once the last handle is dropped.
    for v in &mutated {
        empty(v);
    }
    result?;
    Err(PickleError::Malformed {
        offset: end,
        reason: "the objects form a reference cycle (something contains itself), which no supported model has".into(),
    })
}

/// One mark on the stack: the index into `stack` where it was set.
struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    /// Nested pickles (joblib's object arrays) increase this; bounded.
    depth: u8,
    /// Values the machine may still copy. Memo references are free, so
    /// without a bound a small file could make `REDUCE` copy the same big
    /// tuple again and again (memory quadratic in the input).
    budget: usize,
    /// Containers given items after they were made (APPEND, SETITEM, BUILD,
    /// …): every reference cycle runs through one of them.
    mutated: Vec<Value>,
    /// Estimated bytes the machine may still allocate for values.
    heap_left: usize,
    /// The limit `heap_left` started from, for the error.
    heap_limit: usize,
    /// A `FunctionTransformer` was named: a refused global after it is
    /// most likely its function, and the error says so.
    function_transformer: bool,
}

/// Estimated heap cost of one value on the stack or in a list (with the
/// slack of a growing `Vec`).
const SLOT: usize = 2 * std::mem::size_of::<Value>();
/// Estimated heap cost of a new container, object or string header
/// (`Rc` counts, `RefCell` flag, `Vec` header, allocator rounding).
const NODE: usize = 96;
/// Estimated heap cost of a memo entry (hash map slot and growth slack).
const MEMO_ENTRY: usize = 64;

type Result<T, E = PickleError> = std::result::Result<T, E>;

impl<'a> Machine<'a> {
    fn new(data: &'a [u8], pos: usize, depth: u8, heap_left: usize) -> Self {
        Machine {
            data,
            pos,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            depth,
            budget: data.len().saturating_mul(16).saturating_add(1 << 20),
            mutated: Vec::new(),
            heap_left,
            heap_limit: heap_left,
            function_transformer: false,
        }
    }

    /// Charges `n` estimated bytes of heap before they are allocated.
    fn heap(&mut self, n: usize, at: usize) -> Result<()> {
        self.heap_left = self.heap_left.checked_sub(n).ok_or(PickleError::TooLarge {
            offset: at,
            limit: self.heap_limit,
        })?;
        Ok(())
    }

    fn malformed(&self, offset: usize, reason: impl Into<String>) -> PickleError {
        PickleError::Malformed {
            offset,
            reason: reason.into(),
        }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or(PickleError::Truncated {
                offset: self.data.len(),
                what,
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A length read from the file, checked against what remains.
    fn len_checked(&self, n: u64, what: &'static str) -> Result<usize> {
        let remaining = (self.data.len() - self.pos) as u64;
        if n > remaining {
            return Err(PickleError::Truncated {
                offset: self.data.len(),
                what,
            });
        }
        Ok(n as usize)
    }

    fn line(&mut self, what: &'static str) -> Result<&'a [u8]> {
        let rest = &self.data[self.pos..];
        let i = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(PickleError::Truncated {
                offset: self.data.len(),
                what,
            })?;
        self.pos += i + 1;
        Ok(&rest[..i])
    }

    fn pop(&mut self, at: usize) -> Result<Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.malformed(at, "an opcode needs a value but the stack is empty"));
        }
        Ok(self.stack.pop().expect("length checked above"))
    }

    fn top(&self, at: usize) -> Result<&Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.malformed(at, "an opcode needs a value but the stack is empty"));
        }
        Ok(self.stack.last().expect("length checked above"))
    }

    fn pop_mark(&mut self, at: usize) -> Result<Vec<Value>> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| self.malformed(at, "an opcode needs a MARK but none is set"))?;
        Ok(self.stack.split_off(m))
    }

    /// Records the container on top of the stack as given new items (once
    /// for a run of operations on the same container).
    fn mutated_top(&mut self) {
        if let Some(v) = self.stack.last() {
            if self.mutated.last().and_then(node_id) != node_id(v) {
                self.mutated.push(v.clone());
            }
        }
    }

    fn charge(&mut self, n: usize, at: usize) -> Result<()> {
        self.heap(n.saturating_mul(SLOT), at)?;
        self.budget = self.budget.checked_sub(n).ok_or_else(|| {
            self.malformed(at, "the pickle builds far more values than its size explains (refused as a likely memory bomb)")
        })?;
        Ok(())
    }

    fn memo_put(&mut self, idx: u32, at: usize) -> Result<()> {
        if idx > MAX_MEMO {
            return Err(self.malformed(at, format!("memo index {idx} is implausibly large")));
        }
        let v = self.top(at)?.clone();
        self.heap(MEMO_ENTRY, at)?;
        self.memo.insert(idx, v);
        Ok(())
    }

    fn memo_get(&mut self, idx: u32, at: usize) -> Result<()> {
        let v = self.memo.get(&idx).cloned().ok_or_else(|| {
            self.malformed(at, format!("memo entry {idx} is used before it is set"))
        })?;
        self.stack.push(v);
        Ok(())
    }

    fn global(&mut self, module: &str, name: &str, at: usize) -> Result<Value> {
        match Class::resolve(module, name) {
            Some(c) => {
                if c == Class::Inert(
                    "sklearn.preprocessing._function_transformer.FunctionTransformer",
                ) {
                    self.function_transformer = true;
                }
                Ok(Value::Global(c))
            }
            None if module == "sklearn" || module.starts_with("sklearn.") => {
                Err(PickleError::UnsupportedClass {
                    module: module.to_string(),
                    name: name.to_string(),
                    supported: SUPPORTED,
                })
            }
            None => Err(PickleError::RefusedGlobal {
                offset: at,
                module: module.to_string(),
                name: name.to_string(),
                supported: SUPPORTED,
                note: if self.function_transformer {
                    " (the code of a FunctionTransformer: a pipeline step that runs the model's own Python function)"
                } else {
                    ""
                },
            }),
        }
    }

    /// Heap an opcode allocates beyond its stack slot (payloads of
    /// strings and bytes are charged where their length is known).
    fn extra_cost(op: u8) -> usize {
        match op {
            // MARK: a mark index.
            b'(' => 8,
            // New containers: EMPTY_TUPLE/LIST/DICT/SET, TUPLE, TUPLE1-3,
            // LIST, DICT, FROZENSET.
            b')' | b']' | b'}' | 0x8f | b't' | 0x85..=0x87 | b'l' | b'd' | 0x91 => NODE,
            // Strings and bytes: the Rc header (the payload is charged
            // with its length).
            b'X' | 0x8c | 0x8d | b'V' | b'T' | b'U' | b'S' | b'B' | b'C' | 0x8e | 0x96 => NODE,
            // Objects made by REDUCE, NEWOBJ, NEWOBJ_EX (their arguments
            // are charged as copies), and big ints.
            b'R' | 0x81 | 0x92 | 0x8a | 0x8b | b'L' => NODE,
            _ => 0,
        }
    }

    fn run(&mut self) -> Result<Value> {
        loop {
            let at = self.pos;
            let op = self.u8("an opcode (the pickle has no STOP)")?;
            // Every opcode may push one value; those that allocate more
            // are charged for it below, before allocating.
            self.heap(SLOT + Self::extra_cost(op), at)?;
            match op {
                // PROTO
                0x80 => {
                    let p = self.u8("PROTO")?;
                    if p > 5 {
                        return Err(self.malformed(at, format!("pickle protocol {p} is newer than 5, the highest fleetscore (and Python 3.8+) knows")));
                    }
                }
                // FRAME: framing is a hint for buffered readers; the bytes
                // that follow are ordinary opcodes.
                0x95 => {
                    self.u64("FRAME")?;
                }
                b'.' => {
                    let v = self.pop(at)?;
                    return Ok(v);
                }
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop(at)?;
                }
                b'1' => {
                    self.pop_mark(at)?;
                }
                b'2' => {
                    let v = self.top(at)?.clone();
                    self.stack.push(v);
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = self.u32("BININT")? as i32;
                    self.stack.push(Value::Int(i64::from(v)));
                }
                b'K' => {
                    let v = self.u8("BININT1")?;
                    self.stack.push(Value::Int(i64::from(v)));
                }
                b'M' => {
                    let v = self.u16("BININT2")?;
                    self.stack.push(Value::Int(i64::from(v)));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        u64::from(self.u8("LONG1")?)
                    } else {
                        u64::from(self.u32("LONG4")?)
                    };
                    let n = self.len_checked(n, "a long integer")?;
                    self.heap(n, at)?;
                    let b = self.take(n, "a long integer")?;
                    self.stack.push(long_from_le(b));
                }
                b'I' => {
                    let l = self.line("INT")?;
                    let v = match l {
                        b"01" => Value::Bool(true),
                        b"00" => Value::Bool(false),
                        _ => Value::Int(parse_ascii_int(l).ok_or_else(|| {
                            self.malformed(at, "INT is not a decimal integer")
                        })?),
                    };
                    self.stack.push(v);
                }
                b'L' => {
                    let l = self.line("LONG")?;
                    let l = l.strip_suffix(b"L").unwrap_or(l);
                    let v = parse_ascii_int(l)
                        .ok_or_else(|| self.malformed(at, "LONG is not a decimal integer that fits 64 bits"))?;
                    self.stack.push(Value::Int(v));
                }
                b'G' => {
                    let b = self.take(8, "BINFLOAT")?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.stack.push(Value::Float(f64::from_be_bytes(a)));
                }
                b'F' => {
                    let l = self.line("FLOAT")?;
                    let v = std::str::from_utf8(l)
                        .ok()
                        .and_then(|s| s.trim().parse::<f64>().ok())
                        .ok_or_else(|| self.malformed(at, "FLOAT is not a number"))?;
                    self.stack.push(Value::Float(v));
                }
                // Strings: BINUNICODE, SHORT_BINUNICODE, BINUNICODE8
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        b'X' => u64::from(self.u32("BINUNICODE")?),
                        0x8c => u64::from(self.u8("SHORT_BINUNICODE")?),
                        _ => self.u64("BINUNICODE8")?,
                    };
                    let n = self.len_checked(n, "a string")?;
                    self.heap(n, at)?;
                    let b = self.take(n, "a string")?;
                    let s = std::str::from_utf8(b)
                        .map_err(|_| self.malformed(at, "a string is not valid UTF-8"))?;
                    self.stack.push(Value::Str(Rc::from(s)));
                }
                b'V' => {
                    let l = self.line("UNICODE")?;
                    // Each input byte becomes at most 4 bytes of UTF-8.
                    self.heap(l.len().saturating_mul(4), at)?;
                    let s = decode_raw_unicode_escape(l)
                        .ok_or_else(|| self.malformed(at, "UNICODE is not valid raw-unicode-escape text"))?;
                    self.stack.push(Value::Str(Rc::from(s.as_str())));
                }
                // Python 2 byte strings: BINSTRING, SHORT_BINSTRING. Kept as
                // bytes; the translator reads them as text where a name is
                // expected (latin-1), as Python 3 does with encoding='latin1'.
                b'T' | b'U' => {
                    let n = if op == b'T' {
                        u64::from(self.u32("BINSTRING")?)
                    } else {
                        u64::from(self.u8("SHORT_BINSTRING")?)
                    };
                    let n = self.len_checked(n, "a byte string")?;
                    self.heap(n, at)?;
                    let b = self.take(n, "a byte string")?;
                    self.stack.push(Value::Bytes(Rc::from(b)));
                }
                b'S' => {
                    let l = self.line("STRING")?;
                    self.heap(l.len(), at)?;
                    let b = decode_string_literal(l)
                        .ok_or_else(|| self.malformed(at, "STRING is not a quoted literal"))?;
                    self.stack.push(Value::Bytes(Rc::from(b.as_slice())));
                }
                // Bytes: BINBYTES, SHORT_BINBYTES, BINBYTES8, BYTEARRAY8
                b'B' | b'C' | 0x8e | 0x96 => {
                    let n = match op {
                        b'B' => u64::from(self.u32("BINBYTES")?),
                        b'C' => u64::from(self.u8("SHORT_BINBYTES")?),
                        0x8e => self.u64("BINBYTES8")?,
                        _ => self.u64("BYTEARRAY8")?,
                    };
                    let n = self.len_checked(n, "bytes")?;
                    self.heap(n, at)?;
                    let b = self.take(n, "bytes")?;
                    self.stack.push(Value::Bytes(Rc::from(b)));
                }
                b')' => self.stack.push(Value::tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark(at)?;
                    self.stack.push(Value::tuple(items));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop(at)?);
                    }
                    items.reverse();
                    self.stack.push(Value::tuple(items));
                }
                b']' => self.stack.push(Value::list(Vec::new())),
                b'l' => {
                    let items = self.pop_mark(at)?;
                    self.stack.push(Value::list(items));
                }
                b'}' => self.stack.push(Value::dict(Vec::new())),
                b'd' => {
                    let items = self.pop_mark(at)?;
                    let pairs = pairs(items).ok_or_else(|| self.malformed(at, "DICT needs key/value pairs"))?;
                    self.stack.push(Value::dict(pairs));
                }
                0x8f => self.stack.push(Value::set(Vec::new())),
                0x91 => {
                    let items = self.pop_mark(at)?;
                    self.stack.push(Value::set(items));
                }
                b'a' => {
                    let v = self.pop(at)?;
                    let list = self.top(at)?;
                    list.list_extend(std::iter::once(v))
                        .map_err(|k| self.malformed(at, format!("APPEND to a {k}, not a list")))?;
                    self.mutated_top();
                }
                b'e' => {
                    let items = self.pop_mark(at)?;
                    let list = self.top(at)?;
                    list.list_extend(items)
                        .map_err(|k| self.malformed(at, format!("APPENDS to a {k}, not a list")))?;
                    self.mutated_top();
                }
                0x90 => {
                    let items = self.pop_mark(at)?;
                    let set = self.top(at)?;
                    set.set_extend(items)
                        .map_err(|k| self.malformed(at, format!("ADDITEMS to a {k}, not a set")))?;
                    self.mutated_top();
                }
                b's' => {
                    let v = self.pop(at)?;
                    let k = self.pop(at)?;
                    let d = self.top(at)?;
                    d.dict_extend(std::iter::once((k, v)))
                        .map_err(|k| self.malformed(at, format!("SETITEM on a {k}, not a dict")))?;
                    self.mutated_top();
                }
                b'u' => {
                    let items = self.pop_mark(at)?;
                    let pairs = pairs(items).ok_or_else(|| self.malformed(at, "SETITEMS needs key/value pairs"))?;
                    let d = self.top(at)?;
                    d.dict_extend(pairs)
                        .map_err(|k| self.malformed(at, format!("SETITEMS on a {k}, not a dict")))?;
                    self.mutated_top();
                }
                // Memo: PUT, BINPUT, LONG_BINPUT, MEMOIZE; GET, BINGET, LONG_BINGET
                b'p' => {
                    let l = self.line("PUT")?;
                    let i = parse_ascii_int(l)
                        .and_then(|i| u32::try_from(i).ok())
                        .ok_or_else(|| self.malformed(at, "PUT index is not a number"))?;
                    self.memo_put(i, at)?;
                }
                b'q' => {
                    let i = u32::from(self.u8("BINPUT")?);
                    self.memo_put(i, at)?;
                }
                b'r' => {
                    let i = self.u32("LONG_BINPUT")?;
                    self.memo_put(i, at)?;
                }
                0x94 => {
                    let i = u32::try_from(self.memo.len())
                        .map_err(|_| self.malformed(at, "memo too large"))?;
                    self.memo_put(i, at)?;
                }
                b'g' => {
                    let l = self.line("GET")?;
                    let i = parse_ascii_int(l)
                        .and_then(|i| u32::try_from(i).ok())
                        .ok_or_else(|| self.malformed(at, "GET index is not a number"))?;
                    self.memo_get(i, at)?;
                }
                b'h' => {
                    let i = u32::from(self.u8("BINGET")?);
                    self.memo_get(i, at)?;
                }
                b'j' => {
                    let i = self.u32("LONG_BINGET")?;
                    self.memo_get(i, at)?;
                }
                b'c' => {
                    let module = self.line("GLOBAL module")?;
                    let name = self.line("GLOBAL name")?;
                    let module = String::from_utf8_lossy(module).into_owned();
                    let name = String::from_utf8_lossy(name).into_owned();
                    let g = self.global(&module, &name, at)?;
                    self.stack.push(g);
                }
                0x93 => {
                    let name = self.pop(at)?;
                    let module = self.pop(at)?;
                    let (Some(module), Some(name)) = (module.as_text(), name.as_text()) else {
                        return Err(self.malformed(at, "STACK_GLOBAL needs two strings"));
                    };
                    let g = self.global(&module, &name, at)?;
                    self.stack.push(g);
                }
                b'R' => {
                    let args = self.pop(at)?;
                    let func = self.pop(at)?;
                    let v = self.reduce(&func, &args, at)?;
                    self.stack.push(v);
                }
                0x81 => {
                    let args = self.pop(at)?;
                    let cls = self.pop(at)?;
                    let v = self.new_object(&cls, &args, at)?;
                    self.stack.push(v);
                }
                0x92 => {
                    let kwargs = self.pop(at)?;
                    let args = self.pop(at)?;
                    let cls = self.pop(at)?;
                    if !kwargs.is_empty_container() {
                        return Err(self.malformed(at, "NEWOBJ_EX with keyword arguments is not used by the supported classes"));
                    }
                    let v = self.new_object(&cls, &args, at)?;
                    self.stack.push(v);
                }
                b'b' => {
                    let state = self.pop(at)?;
                    self.build(state, at)?;
                }
                b'P' | b'Q' => {
                    return Err(PickleError::UnsupportedOpcode {
                        offset: at,
                        opcode: "PERSID",
                        reason: "persistent ids refer to objects outside the file; scikit-learn models do not use them",
                    })
                }
                0x82..=0x84 => {
                    return Err(PickleError::UnsupportedOpcode {
                        offset: at,
                        opcode: "EXT",
                        reason: "the copyreg extension registry is not used by scikit-learn models",
                    })
                }
                b'i' | b'o' => {
                    return Err(PickleError::UnsupportedOpcode {
                        offset: at,
                        opcode: "INST/OBJ",
                        reason: "old-style class instantiation is not used by scikit-learn models; re-save the model with pickle protocol 2 or later",
                    })
                }
                0x97 | 0x98 => {
                    return Err(PickleError::UnsupportedOpcode {
                        offset: at,
                        opcode: "NEXT_BUFFER",
                        reason: "out-of-band buffers need the buffers the pickle was written with; save the model without buffer_callback",
                    })
                }
                byte => return Err(PickleError::UnknownOpcode { offset: at, byte }),
            }
        }
    }

    /// `REDUCE`: `func(*args)` for the allow-listed callables, interpreted
    /// without calling anything.
    fn reduce(&mut self, func: &Value, args: &Value, at: usize) -> Result<Value> {
        let Value::Global(class) = func else {
            return Err(self.malformed(
                at,
                format!(
                    "REDUCE needs an allow-listed callable, found {}",
                    func.kind()
                ),
            ));
        };
        let Some(args) = args.tuple_items() else {
            return Err(self.malformed(at, "REDUCE arguments are not a tuple"));
        };
        match class {
            // copyreg._reconstructor(cls, base, state): protocol 0/1 object
            // creation; base must be `object`.
            Class::CopyregReconstructor => match args {
                [Value::Global(cls), Value::Global(Class::BuiltinObject), Value::None] => {
                    Ok(Value::object(*cls, Vec::new()))
                }
                _ => Err(self.malformed(
                    at,
                    "copyreg._reconstructor with arguments other than (class, object, None)",
                )),
            },
            // _codecs.encode(text, 'latin1'): how Python 3 pickles `bytes`
            // at protocol 2.
            Class::CodecsEncode => match args {
                [Value::Str(s), Value::Str(enc)] if is_latin1(enc) => {
                    self.charge(s.len() / 8, at)?;
                    self.heap(s.len(), at)?;
                    let b: Option<Vec<u8>> =
                        s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect();
                    let b = b.ok_or_else(|| {
                        self.malformed(at, "latin-1 text with a character above U+00FF")
                    })?;
                    Ok(Value::Bytes(Rc::from(b.as_slice())))
                }
                [Value::Str(s)] => Ok(Value::Bytes(Rc::from(s.as_bytes()))),
                _ => Err(self.malformed(at, "_codecs.encode is only read with a latin-1 string")),
            },
            Class::BuiltinSet | Class::BuiltinFrozenset => match args {
                [] => Ok(Value::set(Vec::new())),
                [items] => {
                    self.charge(items.sequence_items().map_or(0, |i| i.len()), at)?;
                    let items = items.sequence_items().ok_or_else(|| {
                        self.malformed(at, "set() of something that is not a list")
                    })?;
                    Ok(Value::set(items))
                }
                _ => Err(self.malformed(at, "set() with more than one argument")),
            },
            Class::BuiltinBytearray | Class::BuiltinBytes => match args {
                [] => Ok(Value::Bytes(Rc::from(&[][..]))),
                [Value::Bytes(b)] => Ok(Value::Bytes(b.clone())),
                _ => Err(self.malformed(at, "bytes() or bytearray() with unexpected arguments")),
            },
            // newObj(cls) is cls.__new__(cls): the object is an instance of
            // cls, whose state BUILD then sets.
            c if c.is_new_obj() => match args {
                [Value::Global(cls @ (Class::Sklearn(_) | Class::Inert(_)))] => {
                    Ok(Value::object(*cls, Vec::new()))
                }
                _ => Err(self.malformed(
                    at,
                    format!("`{}` with arguments other than (class,)", c.python_name()),
                )),
            },
            // Classes called to make an instance (numpy.dtype(...)), the
            // numpy array constructors, and objects never interpreted. Their
            // arguments are checked when the object is interpreted.
            Class::NumpyDtype
            | Class::NumpyReconstruct
            | Class::NumpyScalar
            | Class::NumpyFrombuffer
            | Class::Inert(_)
            | Class::Sklearn(_) => {
                self.charge(args.len(), at)?;
                Ok(Value::object(*class, args.to_vec()))
            }
            other => Err(self.malformed(
                at,
                format!(
                    "REDUCE calls `{}`, which is not callable this way",
                    other.python_name()
                ),
            )),
        }
    }

    /// `NEWOBJ`: `cls.__new__(cls, *args)`.
    fn new_object(&mut self, cls: &Value, args: &Value, at: usize) -> Result<Value> {
        let Value::Global(class) = cls else {
            return Err(self.malformed(
                at,
                format!("NEWOBJ needs an allow-listed class, found {}", cls.kind()),
            ));
        };
        let Some(args) = args.tuple_items() else {
            return Err(self.malformed(at, "NEWOBJ arguments are not a tuple"));
        };
        match class {
            Class::Sklearn(_)
            | Class::Inert(_)
            | Class::JoblibArrayWrapper
            | Class::NumpyDtype
            | Class::NumpyNdarray => {
                self.charge(args.len(), at)?;
                Ok(Value::object(*class, args.to_vec()))
            }
            Class::BuiltinSet | Class::BuiltinFrozenset => Ok(Value::set(Vec::new())),
            other => Err(self.malformed(
                at,
                format!(
                    "NEWOBJ on `{}`, which is not a class fleetscore instantiates",
                    other.python_name()
                ),
            )),
        }
    }

    /// `BUILD`: `obj.__setstate__(state)` or `obj.__dict__.update(state)`.
    fn build(&mut self, state: Value, at: usize) -> Result<()> {
        let obj = self.top(at)?.clone();
        let Value::Object(o) = &obj else {
            return Err(self.malformed(at, format!("BUILD on a {}, not an object", obj.kind())));
        };
        self.mutated.push(obj.clone());
        let class = o.borrow().class;
        if class == Class::JoblibArrayWrapper {
            o.borrow_mut().state = Some(state);
            let array = self.read_joblib_array(o, at)?;
            self.stack.pop();
            self.stack.push(array);
            return Ok(());
        }
        let mut o = o.borrow_mut();
        if o.state.is_some() {
            return Err(self.malformed(at, "BUILD applied twice to the same object"));
        }
        o.state = Some(state);
        Ok(())
    }

    /// Reads the raw bytes joblib writes after a `NumpyArrayWrapper`.
    fn read_joblib_array(&mut self, wrapper: &Rc<RefCell<Object>>, at: usize) -> Result<Value> {
        let w = wrapper.borrow();
        let state = w.state.as_ref().expect("set by the caller");
        let field = |k: &str| state.dict_get(k);
        let bad = |what: &str| PickleError::Malformed {
            offset: at,
            reason: format!("joblib NumpyArrayWrapper: {what}"),
        };
        match field("subclass") {
            Some(Value::Global(Class::NumpyNdarray)) => {}
            Some(Value::Global(c)) => {
                return Err(bad(&format!(
                    "array subclass `{}` is not supported",
                    c.python_name()
                )))
            }
            _ => return Err(bad("missing or unknown `subclass`")),
        }
        let shape = field("shape")
            .and_then(|s| s.shape())
            .ok_or_else(|| bad("missing or invalid `shape`"))?;
        let fortran = match field("order").and_then(|o| o.as_text()) {
            Some(o) if o == "F" => true,
            Some(o) if o == "C" || o == "K" || o == "A" => false,
            _ => return Err(bad("missing or invalid `order`")),
        };
        let dtype = field("dtype")
            .ok_or_else(|| bad("missing `dtype`"))
            .and_then(|d| Dtype::from_value(&d).map_err(|e| bad(&e)))?;
        let aligned =
            matches!(field("numpy_array_alignment_bytes"), Some(v) if !matches!(v, Value::None));
        drop(w);
        if dtype.kind == 'O' {
            // joblib pickles object arrays as a nested protocol-2 pickle.
            if self.depth > 0 {
                return Err(self.malformed(at, "nested joblib object array inside a nested pickle"));
            }
            let mut inner = Machine::new(self.data, self.pos, self.depth + 1, self.heap_left);
            let v = inner.run();
            self.heap_left = inner.heap_left;
            self.mutated.append(&mut inner.mutated);
            let v = v?;
            self.pos = inner.pos;
            return Ok(v);
        }
        if aligned {
            let pad = self.u8("joblib array padding")?;
            self.take(usize::from(pad), "joblib array padding")?;
        }
        let count = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| bad("shape overflows"))?;
        let nbytes = count
            .checked_mul(dtype.itemsize)
            .ok_or_else(|| bad("array size overflows"))?;
        let n = self.len_checked(nbytes as u64, "joblib array data")?;
        self.heap(n.saturating_add(NODE), at)?;
        let raw = self.take(n, "joblib array data")?;
        Ok(Value::Array(Rc::new(NdArray {
            shape,
            fortran,
            dtype,
            data: ArrayData::Raw(Rc::from(raw)),
        })))
    }
}

/// Identity of a value that can hold other values.
fn node_id(v: &Value) -> Option<usize> {
    Some(match v {
        Value::Tuple(rc) => Rc::as_ptr(rc) as *const u8 as usize,
        Value::List(rc) | Value::Set(rc) => Rc::as_ptr(rc) as *const u8 as usize,
        Value::Dict(rc) => Rc::as_ptr(rc) as *const u8 as usize,
        Value::Object(rc) => Rc::as_ptr(rc) as *const u8 as usize,
        _ => return None,
    })
}

/// The `i`-th value held by `v` (dict keys and values alternate; an
/// object's state follows its arguments).
fn child(v: &Value, i: usize) -> Option<Value> {
    match v {
        Value::Tuple(t) => t.get(i).cloned(),
        Value::List(l) | Value::Set(l) => l.borrow().get(i).cloned(),
        Value::Dict(d) => d.borrow().get(i / 2).map(|(k, v)| {
            if i.is_multiple_of(2) {
                k.clone()
            } else {
                v.clone()
            }
        }),
        Value::Object(o) => {
            let o = o.borrow();
            match i.cmp(&o.args.len()) {
                std::cmp::Ordering::Less => Some(o.args[i].clone()),
                std::cmp::Ordering::Equal => o.state.clone(),
                std::cmp::Ordering::Greater => None,
            }
        }
        _ => None,
    }
}

/// Whether any value reachable from `roots` contains itself: an iterative
/// depth-first search (no recursion, so deep nesting is fine), visiting each
/// shared value once.
fn has_cycle(roots: &[Value]) -> bool {
    // Present in `on_path`: true while the value is on the current path,
    // false once all it holds has been searched.
    let mut on_path: HashMap<usize, bool> = HashMap::new();
    let mut path: Vec<(Value, usize)> = Vec::new();
    for root in roots {
        let Some(id) = node_id(root) else { continue };
        if on_path.contains_key(&id) {
            continue;
        }
        on_path.insert(id, true);
        path.push((root.clone(), 0));
        while let Some((node, i)) = path.last_mut() {
            let next = child(node, *i);
            *i += 1;
            let Some(next) = next else {
                if let Some(id) = path.pop().and_then(|(done, _)| node_id(&done)) {
                    on_path.insert(id, false);
                }
                continue;
            };
            let Some(id) = node_id(&next) else { continue };
            match on_path.get(&id) {
                Some(true) => return true,
                Some(false) => {}
                None => {
                    on_path.insert(id, true);
                    path.push((next, 0));
                }
            }
        }
    }
    false
}

/// Takes the contents out of a container, dropping them after the borrow
/// ends (dropping them may reach this container again).
fn empty(v: &Value) {
    match v {
        Value::List(l) | Value::Set(l) => {
            let items = std::mem::take(&mut *l.borrow_mut());
            drop(items);
        }
        Value::Dict(d) => {
            let items = std::mem::take(&mut *d.borrow_mut());
            drop(items);
        }
        Value::Object(o) => {
            let taken = {
                let mut o = o.borrow_mut();
                (std::mem::take(&mut o.args), o.state.take())
            };
            drop(taken);
        }
        _ => {}
    }
}

fn is_latin1(enc: &str) -> bool {
    matches!(
        enc.to_ascii_lowercase().as_str(),
        "latin1" | "latin-1" | "iso-8859-1" | "iso8859-1" | "l1"
    )
}

fn pairs(items: Vec<Value>) -> Option<Vec<(Value, Value)>> {
    if !items.len().is_multiple_of(2) {
        return None;
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Some(out)
}

/// Python's little-endian two's-complement long encoding.
fn long_from_le(b: &[u8]) -> Value {
    if b.is_empty() {
        return Value::Int(0);
    }
    if b.len() <= 8 {
        let neg = b[b.len() - 1] & 0x80 != 0;
        let mut a = if neg { [0xffu8; 8] } else { [0u8; 8] };
        a[..b.len()].copy_from_slice(b);
        return Value::Int(i64::from_le_bytes(a));
    }
    Value::BigInt(Rc::from(b))
}

fn parse_ascii_int(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.trim().parse().ok()
}

/// Protocol 0 `STRING`: a Python repr of a byte string, `'…'` or `"…"`.
fn decode_string_literal(l: &[u8]) -> Option<Vec<u8>> {
    let q = *l.first()?;
    if !(q == b'\'' || q == b'"') || l.len() < 2 || *l.last()? != q {
        return None;
    }
    let body = &l[1..l.len() - 1];
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let c = body[i];
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let e = *body.get(i)?;
        i += 1;
        match e {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'\\' | b'\'' | b'"' => out.push(e),
            b'x' => {
                let h = std::str::from_utf8(body.get(i..i + 2)?).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 2;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Protocol 0 `UNICODE`: raw-unicode-escape (`\uXXXX`, `\UXXXXXXXX`, other
/// bytes are latin-1).
fn decode_raw_unicode_escape(l: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(l.len());
    let mut i = 0;
    while i < l.len() {
        if l[i] == b'\\' && matches!(l.get(i + 1), Some(b'u') | Some(b'U')) {
            let n = if l[i + 1] == b'u' { 4 } else { 8 };
            let h = std::str::from_utf8(l.get(i + 2..i + 2 + n)?).ok()?;
            out.push(char::from_u32(u32::from_str_radix(h, 16).ok()?)?);
            i += 2 + n;
        } else {
            out.push(char::from(l[i]));
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests;
