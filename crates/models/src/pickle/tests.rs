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
            assert_eq!((module.as_str(), name.as_str()), ("os", "system"))
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
    let e = err(b"\x80\x02csklearn.svm._classes\nSVC\n)\x81.");
    let msg = e.to_string();
    assert!(msg.contains("sklearn.svm._classes.SVC"), "{msg}");
    assert!(msg.contains("OneClassSVM"), "{msg}");
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
