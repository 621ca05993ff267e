//! Hand-assembled pickles: hostile and corrupt input must end in an error
//! that names the problem, never a panic.

use super::*;

fn err(data: &[u8]) -> PickleError {
    load(data).expect_err("must be refused")
}

#[test]
fn os_system_is_refused_by_name() {
    // cos\nsystem\n(S'echo pwned'\ntR.
    let e = err(b"cos\nsystem\n(S'echo pwned'\ntR.");
    match &e {
        PickleError::RefusedGlobal { module, name, .. } => {
            assert_eq!((module.as_str(), name.as_str()), ("os", "system"));
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("os.system"), "{e}");
}

#[test]
fn stack_global_eval_is_refused() {
    let mut p = vec![0x80, 4];
    for s in ["builtins", "eval"] {
        p.push(0x8c);
        p.push(s.len() as u8);
        p.extend_from_slice(s.as_bytes());
    }
    p.extend_from_slice(&[0x93, b'.']);
    assert!(err(&p).to_string().contains("builtins.eval"));
}

#[test]
fn unsupported_sklearn_class_names_the_class_and_the_supported_ones() {
    let e = err(b"\x80\x02csklearn.naive_bayes\nGaussianNB\n)\x81.");
    let msg = e.to_string();
    assert!(msg.contains("sklearn.naive_bayes.GaussianNB"), "{msg}");
    assert!(msg.contains("OneClassSVM"), "{msg}");
    assert!(msg.contains("IsolationForest"), "{msg}");
}

#[test]
fn reduce_on_a_non_callable_is_refused() {
    // REDUCE whose callable is a tuple (the result of another expression).
    let e = err(b"\x80\x02)))R.");
    assert!(matches!(e, PickleError::Malformed { .. }), "{e:?}");
}

#[test]
fn truncated_and_unknown_opcodes() {
    assert!(matches!(err(b""), PickleError::Truncated { .. }));
    assert!(matches!(
        err(b"\x80\x02X\xff\xff\xff\x7f"),
        PickleError::Truncated { .. }
    ));
    assert!(matches!(
        err(b"\x80\x02\x8e\xff\xff\xff\xff\xff\xff\xff\xff"),
        PickleError::Truncated { .. }
    ));
    assert!(matches!(
        err(b"\x80\x02\xff"),
        PickleError::UnknownOpcode { byte: 0xff, .. }
    ));
    assert!(matches!(err(b"\x80\x02."), PickleError::Malformed { .. }));
    assert!(matches!(
        err(b"\x80\x02h\x05."),
        PickleError::Malformed { .. }
    ));
    assert!(matches!(err(b"\x80\x02e."), PickleError::Malformed { .. }));
}

#[test]
fn deep_nesting_does_not_overflow_the_stack() {
    // A million nested one-item lists: ]( ... then APPENDs.
    let n = 1_000_000;
    let mut p = vec![0x80, 2];
    p.extend(std::iter::repeat_n(b']', n));
    p.extend(std::iter::repeat_n(b'a', n - 1));
    p.push(b'.');
    let v = load(&p).unwrap();
    assert_eq!(v.kind(), "list");
    drop(v);
}

#[test]
fn basic_values() {
    // pickle.dumps({'a': [1, 2.5, 'x', b'y', None, True, (300, -1)]}, protocol=2):
    // the bytes b'y' go through `_codecs.encode('y', 'latin1')`.
    let p = b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01]q\x02(K\x01G@\x04\x00\x00\x00\x00\x00\x00X\x01\x00\x00\x00xq\x03c_codecs\nencode\nq\x04X\x01\x00\x00\x00yq\x05X\x06\x00\x00\x00latin1q\x06\x86q\x07Rq\x08N\x88M,\x01J\xff\xff\xff\xff\x86q\tes.";
    let v = load(p).unwrap();
    let list = v.dict_get("a").unwrap().sequence_items().unwrap();
    assert_eq!(list.len(), 7);
    assert_eq!(list[0].as_i64(), Some(1));
    assert_eq!(list[1].as_f64(), Some(2.5));
    assert_eq!(list[2].as_text().as_deref(), Some("x"));
    assert!(matches!(&list[3], Value::Bytes(b) if &b[..] == b"y"));
    assert!(matches!(list[4], Value::None));
    assert!(matches!(list[5], Value::Bool(true)));
    let t = list[6].tuple_items().unwrap();
    assert_eq!((t[0].as_i64(), t[1].as_i64()), (Some(300), Some(-1)));
}

#[test]
fn reference_cycle_is_refused_not_leaked() {
    // Found by the fuzz target (LeakSanitizer): values are reference
    // counted, so an object that contains itself was never freed.
    fn check(p: &[u8]) {
        let e = err(p);
        assert!(
            matches!(&e, PickleError::Malformed { reason, .. } if reason.contains("reference cycle")),
            "{e:?}"
        );
    }
    // A list appended to itself: `]` DUP APPEND STOP.
    check(b"\x80\x02]2a.");
    // Through the memo, a tuple and a dict: d = {}; d['k'] = (d,).
    check(b"\x80\x02}q\x00X\x01\x00\x00\x00kh\x00\x85s.");
    // An object whose BUILD state holds the object itself.
    check(b"\x80\x02csklearn.svm\nOneClassSVM\n)\x81q\x00}X\x01\x00\x00\x00sh\x00sb.");
    // A cycle left behind, unreachable, by a pickle that then fails.
    let e = err(b"\x80\x02]2a0\xff");
    assert!(
        matches!(e, PickleError::UnknownOpcode { byte: 0xff, .. }),
        "{e:?}"
    );
    // ... or that then succeeds.
    check(b"\x80\x02]2a0N.");
    // Shared (acyclic) values are fine: t = (); [t, t].
    let v = load(b"\x80\x02)q\x00]q\x01(h\x00h\x00e.").unwrap();
    assert_eq!(v.sequence_items().unwrap().len(), 2);
}

// ---------------------------------------------------------------------
// Real pickles written by scikit-learn 1.9.1 / numpy 2.4.6 / joblib 1.6.0
// (tests/fixtures/pickle/generate.py); the expected values beside them
// (*.json) were printed by the same script.

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/pickle/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    if std::path::Path::new(name)
        .extension()
        .is_some_and(|e| e == "z")
    {
        // joblib's compress=3 is a zlib stream of the whole file.
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::ZlibDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        return out;
    }
    bytes
}

fn expected(name: &str) -> serde_json::Value {
    serde_json::from_slice(&fixture(name)).unwrap()
}

fn array(name: &str) -> NdArray {
    let v = load(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    NdArray::from_value(&v).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Checks every field of a record array against the JSON columns (ints as
/// numbers, floats as `{"f64_bits": [...]}`).
fn check_columns(what: &str, a: &NdArray, want: &serde_json::Value) {
    let cols = want.as_object().unwrap();
    for (name, col) in cols {
        assert!(a.has_field(name), "{what}: no field {name}");
        if let Some(bits) = col.get("f64_bits") {
            let want: Vec<u64> = bits
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_u64().unwrap())
                .collect();
            let got: Vec<u64> = a
                .field_f64(name)
                .unwrap_or_else(|e| panic!("{what}: {e}"))
                .iter()
                .map(|f| f.to_bits())
                .collect();
            assert_eq!(got, want, "{what}: field {name}");
            assert!(a.field_i64(name).is_err(), "{what}: {name} is a float");
        } else {
            let want: Vec<i64> = col
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_i64().unwrap())
                .collect();
            let got = a.field_i64(name).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(got, want, "{what}: field {name}");
            let as_f: Vec<f64> = want.iter().map(|&i| i as f64).collect();
            assert_eq!(a.field_f64(name).unwrap(), as_f, "{what}: {name} as f64");
        }
    }
    assert!(!a.has_field("no_such_field"));
    let e = a.field_i64("no_such_field").unwrap_err();
    assert!(e.contains("no_such_field") && e.contains("left"), "{e}");
}

#[test]
fn tree_nodes_load_through_every_array_path() {
    let want = expected("nodes.json");
    let want = &want["tree"];
    for name in [
        "nodes_p2.pkl",    // _reconstruct, bytes via _codecs.encode
        "nodes_p3.pkl",    // _reconstruct, BINBYTES
        "nodes_p4.pkl",    // _reconstruct, framed
        "nodes_p5.pkl",    // _frombuffer
        "nodes.joblib",    // NumpyArrayWrapper
        "nodes.joblib.z",  // the same, compress=3
        "nodes_be_p4.pkl", // big-endian fields
    ] {
        let a = array(name);
        assert_eq!(a.shape, vec![3], "{name}");
        assert_eq!((a.dtype.kind, a.dtype.itemsize), ('V', 64), "{name}");
        let fields = a.dtype.fields.as_ref().unwrap();
        let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "left_child",
                "right_child",
                "feature",
                "threshold",
                "impurity",
                "n_node_samples",
                "weighted_n_node_samples",
                "missing_go_to_left"
            ],
            "{name}"
        );
        let offsets: Vec<usize> = fields.iter().map(|f| f.offset).collect();
        assert_eq!(offsets, [0, 8, 16, 24, 32, 40, 48, 56], "{name}");
        assert_eq!(fields[0].dtype.big_endian, name.contains("_be"), "{name}");
        check_columns(name, &a, want);
    }
}

#[test]
fn tree_nodes_of_other_layouts() {
    let want = expected("nodes.json");
    // 32-bit indices, packed (41 bytes a record).
    let a = array("nodes_i4_p2.pkl");
    assert_eq!(a.dtype.itemsize, 41);
    check_columns("i4", &a, &want["tree"]);
    // scikit-learn <= 1.2: no missing_go_to_left, 56 bytes.
    let a = array("nodes_v56_p2.pkl");
    assert_eq!(a.dtype.itemsize, 56);
    assert!(!a.has_field("missing_go_to_left"));
    let mut old = want["tree"].clone();
    old.as_object_mut().unwrap().remove("missing_go_to_left");
    check_columns("v56", &a, &old);
    // HistGradientBoosting's packed PREDICTOR_RECORD_DTYPE.
    for name in ["hgb_nodes_p4.pkl", "hgb_nodes_p5.pkl"] {
        let a = array(name);
        assert_eq!(a.dtype.itemsize, 56, "{name}");
        check_columns(name, &a, &want["hgb"]);
    }
}

#[test]
fn label_arrays_print_as_python_str() {
    let want = expected("labels.json");
    for name in ["labels_p2.pkl", "labels_p5.pkl", "labels.joblib"] {
        let v = load(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (key, texts) in want.as_object().unwrap() {
            let a = v
                .dict_get(key)
                .unwrap_or_else(|| panic!("{name}: no {key}"));
            let a = NdArray::from_value(&a).unwrap_or_else(|e| panic!("{name} {key}: {e}"));
            let want: Vec<&str> = texts
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap())
                .collect();
            let got = a
                .to_strings()
                .unwrap_or_else(|e| panic!("{name} {key}: {e}"));
            assert_eq!(got, want, "{name} {key}");
        }
        let ints = NdArray::from_value(&v.dict_get("int64").unwrap()).unwrap();
        assert_eq!(ints.to_i64().unwrap(), [-3, 0, 7, 1 << 62]);
        let be = NdArray::from_value(&v.dict_get("int32_be").unwrap()).unwrap();
        assert_eq!(be.to_i64().unwrap(), [-1, 5]);
        let big = NdArray::from_value(&v.dict_get("uint64").unwrap()).unwrap();
        assert!(big.to_i64().unwrap_err().contains("18446744073709551615"));
        let f = NdArray::from_value(&v.dict_get("float64").unwrap()).unwrap();
        assert!(f.to_i64().is_err());
    }
}

#[test]
fn py_float_repr_matches_python() {
    let cases = expected("floats.json");
    let cases = cases.as_array().unwrap();
    assert!(cases.len() > 150);
    for c in cases {
        let bits = c[0].as_u64().unwrap();
        let want = c[1].as_str().unwrap();
        assert_eq!(py_float_repr(f64::from_bits(bits)), want, "bits {bits:#x}");
    }
    for (x, want) in [
        (f64::NAN, "nan"),
        (f64::INFINITY, "inf"),
        (f64::NEG_INFINITY, "-inf"),
        (1e16, "1e+16"),
        (1e-5, "1e-05"),
        (1.5e16, "1.5e+16"),
        (1e100, "1e+100"),
        (0.0001, "0.0001"),
        (-0.0, "-0.0"),
    ] {
        assert_eq!(py_float_repr(x), want);
    }
}

// ---------------------------------------------------------------------
// Hand-built record dtypes: every malformed layout is refused with its
// reason, before anything is allocated from the claimed sizes.

/// A protocol-2 pickle written opcode by opcode.
struct P(Vec<u8>);

/// Record fields: (name, plain dtype fragment, offset).
type Fields<'a> = [(&'a str, P, i64)];

impl P {
    fn new() -> P {
        P(vec![0x80, 2])
    }
    fn raw(mut self, b: &[u8]) -> P {
        self.0.extend_from_slice(b);
        self
    }
    fn global(self, module: &str, name: &str) -> P {
        self.raw(format!("c{module}\n{name}\n").as_bytes())
    }
    fn str(mut self, s: &str) -> P {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn bytes(mut self, b: &[u8]) -> P {
        self.0.push(b'B');
        self.0.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.0.extend_from_slice(b);
        self
    }
    fn int(mut self, i: i64) -> P {
        // LONG1 with 8 bytes: any i64.
        self.0.extend_from_slice(&[0x8a, 8]);
        self.0.extend_from_slice(&i.to_le_bytes());
        self
    }
    /// `numpy.dtype(descr, False, True)` with state
    /// `(3, order, subdescr, names, fields, elsize, -1, 0)`; `fields` are
    /// (name, plain descr, offset), each a dtype of order '<'.
    fn dtype(self, descr: &str, nested: Option<(&Fields, i64)>, subarray: bool) -> P {
        let mut p = self
            .global("numpy", "dtype")
            .str(descr)
            .raw(b"\x89\x88\x87R(")
            .int(3)
            .str("|");
        p = if subarray {
            p.str("x").raw(b"\x85")
        } else {
            p.raw(b"N")
        };
        match nested {
            None => p.raw(b"NN").int(-1),
            Some((fields, elsize)) => {
                p = p.raw(b"(");
                for (name, _, _) in fields {
                    p = p.str(name);
                }
                p = p.raw(b"t}(");
                for (name, dt, off) in fields {
                    p = p.str(name).raw(&dt.0).int(*off).raw(b"\x86");
                }
                p.raw(b"u").int(elsize)
            }
        }
        .int(-1)
        .int(0)
        .raw(b"tb")
    }
}

/// A plain little-endian dtype, as an opcode fragment (no PROTO).
fn plain(descr: &str) -> P {
    let p = P(Vec::new()).dtype(descr, None, false);
    // The fragment's state says '|'; patch nothing: byte order is read
    // from the state, so make it '<' for multi-byte types.
    let mut b = p.0;
    let bar = b
        .windows(6)
        .position(|w| w == b"X\x01\x00\x00\x00|")
        .unwrap();
    b[bar + 5] = b'<';
    P(b)
}

/// `_reconstruct(ndarray, (0,), b'b')` with state (1, shape, dtype, False,
/// data), then STOP.
fn record_array(fields: &Fields, elsize: i64, shape: i64, data: &[u8]) -> Vec<u8> {
    P::new()
        .global("numpy._core.multiarray", "_reconstruct")
        .global("numpy", "ndarray")
        .raw(b"K\x00\x85C\x01b\x87R(K\x01")
        .int(shape)
        .raw(b"\x85")
        .dtype("V8", Some((fields, elsize)), false)
        .raw(b"\x89")
        .bytes(data)
        .raw(b"tb.")
        .0
}

fn record_err(fields: &Fields, elsize: i64, shape: i64, data: &[u8]) -> String {
    let v = load(&record_array(fields, elsize, shape, data)).unwrap();
    NdArray::from_value(&v).unwrap_err()
}

#[test]
fn hand_built_record_array_reads_by_name_and_offset() {
    // Two records of {b: <f8 at 0, a: <i4 at 8} padded to 16 bytes.
    let mut data = Vec::new();
    for (b, a) in [(1.5f64, -7i32), (f64::INFINITY, 9)] {
        data.extend_from_slice(&b.to_le_bytes());
        data.extend_from_slice(&a.to_le_bytes());
        data.extend_from_slice(&[0xee; 4]);
    }
    let p = record_array(
        &[("b", plain("f8"), 0), ("a", plain("i4"), 8)],
        16,
        2,
        &data,
    );
    let a = NdArray::from_value(&load(&p).unwrap()).unwrap();
    assert_eq!(a.field_f64("b").unwrap(), [1.5, f64::INFINITY]);
    assert_eq!(a.field_i64("a").unwrap(), [-7, 9]);
    assert_eq!(a.field_f64("a").unwrap(), [-7.0, 9.0]);
    assert!(a.field_i64("b").unwrap_err().contains("float"));
    assert!(a.to_f64().is_err(), "a record array is not numeric");
}

#[test]
fn malformed_record_dtypes_are_refused_with_a_reason() {
    let f8 = || plain("f8");
    let zeros = vec![0u8; 16];
    let cases: Vec<(String, &str)> = vec![
        (
            record_err(&[("a", f8(), 0), ("b", f8(), 4)], 16, 1, &zeros),
            "overlap",
        ),
        (
            record_err(&[("a", f8(), 0), ("b", f8(), 9)], 16, 1, &zeros),
            "ends past",
        ),
        (record_err(&[("a", f8(), -1)], 16, 1, &zeros), "offset"),
        (record_err(&[("a", f8(), 0)], 0, 1, &[]), "no size"),
        (
            record_err(&[("a", f8(), 0), ("a", f8(), 8)], 16, 1, &zeros),
            "named twice",
        ),
        (
            record_err(&[("a", plain("O8"), 0)], 16, 1, &zeros),
            "Python objects",
        ),
        (record_err(&[], 16, 1, &zeros), "no fields"),
        (
            record_err(
                &[("a", P(Vec::new()).dtype("f8", None, true), 0)],
                16,
                1,
                &zeros,
            ),
            "subarray",
        ),
        (
            record_err(
                &[(
                    "a",
                    P(Vec::new()).dtype("V8", Some((&[("x", plain("f8"), 0)], 8)), false),
                    0,
                )],
                16,
                1,
                &zeros,
            ),
            "nested",
        ),
    ];
    for (e, want) in cases {
        assert!(e.contains(want), "{want}: {e}");
    }
    // A field table padded with entries no name refers to.
    let mut padded = record_array(&[("a", f8(), 0)], 16, 1, &zeros);
    let at = padded.windows(2).position(|w| w == b"}(").unwrap() + 2;
    let mut pad = Vec::new();
    for i in 0..10 {
        pad.extend_from_slice(&P(Vec::new()).str(&format!("pad{i}")).raw(b"N").0);
    }
    padded.splice(at..at, pad);
    let e = NdArray::from_value(&load(&padded).unwrap()).unwrap_err();
    assert!(e.contains("11 entries for 1 fields"), "{e}");
    let many: Vec<(String, P, i64)> = (0..65).map(|i| (format!("f{i}"), plain("u1"), i)).collect();
    let many: Vec<(&str, P, i64)> = many
        .into_iter()
        .map(|(n, p, o)| (&*n.leak(), p, o))
        .collect();
    let e = record_err(&many, 65, 1, &[0; 65]);
    assert!(e.contains("65 fields") && e.contains("64"), "{e}");
}

#[test]
fn record_array_claiming_huge_counts_is_refused_before_allocating() {
    let fields = || [("a", plain("f8"), 0)];
    // elsize × count overflows usize.
    let e = record_err(&fields(), 1 << 40, 1 << 40, &[0; 8]);
    assert!(e.contains("overflows"), "{e}");
    // 2^60 records of 8 bytes, with 8 bytes of data.
    let e = record_err(&fields(), 8, 1 << 60, &[0; 8]);
    assert!(e.contains("overflows") || e.contains("needs"), "{e}");
    let e = record_err(&fields(), 8, 1 << 50, &[0; 8]);
    assert!(e.contains("needs"), "{e}");
    // The same through joblib's wrapper, which reads the data from the
    // stream after the header: refused before reading or allocating.
    for (shape, want) in [(1i64 << 60, "overflows"), (1 << 50, "truncated")] {
        let p = P::new()
            .global("joblib.numpy_pickle", "NumpyArrayWrapper")
            .raw(b")\x81}(")
            .str("subclass")
            .global("numpy", "ndarray")
            .str("shape")
            .int(shape)
            .raw(b"\x85")
            .str("order")
            .str("C")
            .str("dtype")
            .dtype("V8", Some((&fields(), 16)), false)
            .raw(b"ub.")
            .0;
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains(want), "{shape}: {e}");
    }
    // Text of width 0 claims any count without bytes to back it.
    let u0 = NdArray {
        shape: vec![1 << 60],
        fortran: false,
        dtype: Dtype {
            kind: 'U',
            itemsize: 0,
            big_endian: false,
            fields: None,
        },
        data: ArrayData::Raw(std::rc::Rc::from(&[][..])),
    };
    assert!(u0.to_strings().unwrap_err().contains("width 0"));
    // A hand-made array whose bytes disagree with its shape: the typed
    // readers check before reading.
    let v = load(&record_array(&fields(), 8, 2, &[0; 16])).unwrap();
    let mut a = NdArray::from_value(&v).unwrap();
    a.shape = vec![usize::MAX / 2];
    assert!(a.field_f64("a").unwrap_err().contains("overflows"));
    a.shape = vec![3];
    assert!(a.field_f64("a").unwrap_err().contains("needs 24 bytes"));
}

// ---------------------------------------------------------------------
// Whole estimators pickled by scikit-learn 1.9.1.

fn attr(v: &Value, key: &str) -> Value {
    let state = v.object_state().expect("an object with a state");
    state
        .dict_get(key)
        .unwrap_or_else(|| panic!("no attribute {key}"))
}

fn bits(v: &serde_json::Value) -> Vec<u64> {
    v["f64_bits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap())
        .collect()
}

#[test]
fn gradient_boosting_estimators_is_a_2d_object_array_in_every_form() {
    let want = expected("estimators/gb_clf3_d1.json");
    for name in [
        "estimators/gb_clf3_d1.p2.pkl",
        "estimators/gb_clf3_d1.p5.pkl",
        // joblib writes an object array as a nested protocol-2 pickle.
        "estimators/gb_clf3_d1.joblib",
        "estimators/gb_clf3_d1.joblib.z",
    ] {
        let v = load(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            v.object_class(),
            Some(Class::Sklearn(Estimator::GradientBoostingClassifier)),
            "{name}"
        );
        let stages = NdArray::from_value(&attr(&v, "estimators_")).unwrap();
        assert_eq!(stages.shape, [2, 3], "{name}");
        let trees = stages.objects().expect("an object array");
        assert_eq!(trees.len(), 6, "{name}");
        for (i, t) in trees.iter().enumerate() {
            assert_eq!(
                t.object_class(),
                Some(Class::Sklearn(Estimator::DecisionTreeRegressor)),
                "{name}"
            );
            let tree = attr(t, "tree_");
            assert_eq!(
                tree.object_class(),
                Some(Class::Sklearn(Estimator::Tree)),
                "{name}"
            );
            let nodes = NdArray::from_value(&attr(&tree, "nodes")).unwrap();
            let got: Vec<u64> = nodes
                .field_f64("threshold")
                .unwrap()
                .iter()
                .map(|f| f.to_bits())
                .collect();
            assert_eq!(
                got,
                bits(&want["threshold"][i / 3][i % 3]),
                "{name} tree {i}"
            );
        }
        assert_eq!(
            attr(&v, "init_").object_class(),
            Some(Class::Sklearn(Estimator::DummyClassifier))
        );
        assert!(matches!(
            attr(&v, "_loss").object_class(),
            Some(Class::Inert("sklearn._loss.loss.HalfMultinomialLoss"))
        ));
        let classes = NdArray::from_value(&attr(&v, "classes_")).unwrap();
        assert_eq!(classes.to_strings().unwrap(), ["a", "b", "c"]);
    }
    // A numeric array has no objects.
    assert!(array("nodes_p2.pkl").objects().is_none());
}

#[test]
fn neighbour_trees_are_objects_of_their_class_with_record_nodes() {
    for (name, tree, metric) in [
        (
            "estimators/lof.p4.pkl",
            Estimator::KdTree,
            "sklearn.metrics._dist_metrics.EuclideanDistance64",
        ),
        (
            "estimators/lof_ball.p4.pkl",
            Estimator::BallTree,
            "sklearn.metrics._dist_metrics.ManhattanDistance64",
        ),
    ] {
        let v = load(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            v.object_class(),
            Some(Class::Sklearn(Estimator::LocalOutlierFactor))
        );
        // `newObj(KDTree)` then BUILD: an object of the tree's class.
        let t = attr(&v, "_tree");
        assert_eq!(t.object_class(), Some(Class::Sklearn(tree)), "{name}");
        let state = t.object_state().unwrap().sequence_items().unwrap();
        let node_data = NdArray::from_value(&state[2]).unwrap();
        for f in ["idx_start", "idx_end", "is_leaf"] {
            assert!(node_data.field_i64(f).is_ok(), "{name} {f}");
        }
        assert!(node_data.field_f64("radius").is_ok(), "{name}");
        assert_eq!(
            state[11].object_class(),
            Some(Class::Inert(metric)),
            "{name}"
        );
    }
}

#[test]
fn hist_gradient_boosting_predictors_and_labels() {
    let v = load(&fixture("estimators/hgb_clf3.p4.pkl")).unwrap();
    assert_eq!(
        v.object_class(),
        Some(Class::Sklearn(Estimator::HistGradientBoostingClassifier))
    );
    let stages = attr(&v, "_predictors").sequence_items().unwrap();
    assert_eq!(stages.len(), 2);
    for stage in stages {
        let stage = stage.sequence_items().unwrap();
        assert_eq!(stage.len(), 3);
        for p in stage {
            assert_eq!(
                p.object_class(),
                Some(Class::Sklearn(Estimator::TreePredictor))
            );
            let nodes = NdArray::from_value(&attr(&p, "nodes")).unwrap();
            assert!(nodes.field_f64("num_threshold").is_ok());
            assert!(nodes.field_i64("left").is_ok());
            assert!(nodes.field_i64("is_leaf").is_ok());
        }
    }
    assert_eq!(
        attr(&v, "_bin_mapper").object_class(),
        Some(Class::Sklearn(Estimator::BinMapper))
    );
    assert_eq!(
        attr(&v, "_label_encoder").object_class(),
        Some(Class::Sklearn(Estimator::LabelEncoder))
    );
    let classes = NdArray::from_value(&attr(&v, "classes_")).unwrap();
    assert_eq!(classes.to_strings().unwrap(), ["a", "b", "c"]);
}

/// Loads every pickle and joblib file in `dir`; each must be an object of
/// an allow-listed scikit-learn class. Returns how many were read.
fn load_all(dir: &std::path::Path) -> usize {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.to_string_lossy();
            n.ends_with(".pkl") || n.ends_with(".joblib") || n.ends_with(".joblib.z")
        })
        .collect();
    names.sort();
    let mut failures = Vec::new();
    for path in &names {
        let mut bytes = std::fs::read(path).unwrap();
        if path.to_string_lossy().ends_with(".z") {
            use std::io::Read;
            let mut out = Vec::new();
            flate2::read::ZlibDecoder::new(&bytes[..])
                .read_to_end(&mut out)
                .unwrap();
            bytes = out;
        }
        match load(&bytes) {
            Ok(v) if matches!(v.object_class(), Some(Class::Sklearn(_))) => {}
            Ok(v) => failures.push(format!("{}: a {}", path.display(), v.kind())),
            Err(e) => failures.push(format!("{}: {e}", path.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    names.len()
}

#[test]
fn every_supported_estimator_pickled_by_scikit_learn_loads() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pickle/estimators");
    assert!(load_all(&dir) >= 50);
}

/// The full corpus (every estimator at protocols 2, 3, 4, 5 and joblib
/// plain and compressed): `python3 tests/fixtures/pickle/generate.py --all
/// DIR`, then `PICKLE_CORPUS=DIR cargo test -p fleetscore-models --lib
/// pickle -- --ignored`.
#[test]
#[ignore = "needs PICKLE_CORPUS, a directory written by generate.py --all"]
fn pickle_corpus_loads() {
    let dir = std::env::var("PICKLE_CORPUS").expect("PICKLE_CORPUS");
    let n = load_all(std::path::Path::new(&dir));
    eprintln!("{n} files loaded");
}

/// `FunctionTransformer(np.log1p)`: the class is read (HistGradientBoosting
/// keeps one inside), its function is refused, and the error says it is a
/// FunctionTransformer's.
#[test]
fn function_transformer_code_is_refused_at_its_global_with_its_name() {
    let e = load(&fixture("function_transformer.p4.pkl")).unwrap_err();
    match &e {
        PickleError::RefusedGlobal { module, name, .. } => {
            assert_eq!((module.as_str(), name.as_str()), ("numpy", "log1p"));
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("FunctionTransformer"), "{e}");
}

#[test]
fn allow_list_is_consistent() {
    for (i, e) in Estimator::ALL.iter().enumerate() {
        assert_eq!(*e as usize, i, "ALL follows the declaration order");
        for m in e.modules() {
            assert_eq!(
                Class::resolve(m, e.class_name()),
                Some(Class::Sklearn(*e)),
                "{m}.{}",
                e.class_name()
            );
        }
        assert!(e.python_name().ends_with(e.class_name()));
    }
    assert_eq!(
        Estimator::ALL.len(),
        Estimator::LabelEncoder as usize + 1,
        "every variant is in ALL"
    );
    // Old and new paths of the same class.
    for (m, n) in [
        ("sklearn.ensemble.iforest", "IsolationForest"),
        ("sklearn.ensemble._iforest", "IsolationForest"),
        ("sklearn.tree.tree", "ExtraTreeRegressor"),
        ("sklearn.neighbors.kd_tree", "KDTree"),
        ("sklearn.impute", "SimpleImputer"),
        ("sklearn.preprocessing._polynomial", "PolynomialFeatures"),
    ] {
        assert!(
            matches!(Class::resolve(m, n), Some(Class::Sklearn(_))),
            "{m}.{n}"
        );
    }
    // A class under a module that never defined it is refused.
    assert_eq!(
        Class::resolve("sklearn.tree._classes", "IsolationForest"),
        None
    );
    // Inert names, exact and by prefix; newObj.
    assert_eq!(
        Class::resolve("sklearn._loss._loss", "CyHalfTweedieLoss"),
        Some(Class::Inert("sklearn._loss._loss.Cy*"))
    );
    assert_eq!(
        Class::resolve("sklearn._loss._loss", "__pyx_unpickle_CyNewLoss"),
        Some(Class::Inert("sklearn._loss._loss.__pyx_unpickle_Cy*"))
    );
    assert_eq!(Class::resolve("sklearn._loss._loss", "Cy"), None);
    assert_eq!(Class::resolve("sklearn._loss._loss", "Cy.x"), None);
    assert_eq!(Class::resolve("sklearn._loss._loss", "cy_eval"), None);
    assert_eq!(
        Class::resolve("numpy.random._mt19937", "MT19937"),
        Some(Class::Inert("numpy.random._mt19937.MT19937"))
    );
    assert!(Class::resolve("sklearn.neighbors._kd_tree", "newObj")
        .unwrap()
        .is_new_obj());
    assert_eq!(Class::resolve("numpy.random", "seed"), None);
    assert_eq!(Class::resolve("builtins", "eval"), None);
}

#[test]
fn inert_objects_are_built_never_called() {
    // MT19937() via NEWOBJ, then BUILD: recorded, not run.
    let v =
        load(b"\x80\x02cnumpy.random._mt19937\nMT19937\n)\x81}X\x01\x00\x00\x00sK\x01sb.").unwrap();
    assert_eq!(
        v.object_class(),
        Some(Class::Inert("numpy.random._mt19937.MT19937"))
    );
    assert!(v.object_state().is_some());
    // slice(0, 3, None) via REDUCE.
    let v = load(b"\x80\x02cbuiltins\nslice\nK\x00K\x03N\x87R.").unwrap();
    assert_eq!(v.object_class(), Some(Class::Inert("builtins.slice")));
    // newObj needs exactly (class,).
    let e = load(b"\x80\x02csklearn.neighbors._kd_tree\nnewObj\nK\x01\x85R.").unwrap_err();
    assert!(e.to_string().contains("newObj"), "{e}");
    let v = load(
        b"\x80\x02csklearn.neighbors._kd_tree\nnewObj\ncsklearn.neighbors._kd_tree\nKDTree\n\x85R.",
    )
    .unwrap();
    assert_eq!(v.object_class(), Some(Class::Sklearn(Estimator::KdTree)));
}
