//! The values a pickle builds.

use std::cell::RefCell;
use std::rc::Rc;

pub use super::allow::{Class, Estimator};
pub use super::numpy::{ArrayData, Dtype, Field, NdArray};

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
                if a.len() != 1 {
                    return None;
                }
                a.to_i64().ok()?.first().copied()
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
}
