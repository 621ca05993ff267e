//! Regression tests for importer bugs, named after the bug. The first inputs
//! were written by `fuzz/review_findings.py` (found by reading the code
//! during the first fuzz campaign); each must be refused quickly, never
//! panic. Issue 16's model checks (defect 11) and import limits (defect 9)
//! follow, on real scikit-learn models altered by
//! `fixtures/sklearn/generate.py` (`invalid/`) and on bombs built here.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fleetscore_models::import_sklearn;

fn refused(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/regression")
        .join(name);
    let bytes = std::fs::read(&p).unwrap();
    let t = Instant::now();
    let e = import_sklearn(&bytes).expect_err(name).to_string();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "{name} took {:?}",
        t.elapsed()
    );
    e
}

#[test]
fn dtype_wider_than_8_bytes_is_refused_not_a_panic() {
    let e = refused("f16.pkl");
    assert!(e.contains("not a supported numeric type"), "{e}");
}

#[test]
fn zero_width_fortran_array_is_refused_not_a_panic() {
    let e = refused("s0_fortran.pkl");
    assert!(e.contains("not a supported numeric type"), "{e}");
}

#[test]
fn shared_sub_pipelines_do_not_explode_the_walk() {
    let e = refused("fanout_8.pkl");
    assert!(e.contains("pipeline steps"), "{e}");
}

#[test]
fn repeated_copies_of_a_memoised_tuple_are_bounded() {
    let e = refused("copies_20k.pkl");
    assert!(e.contains("memory bomb"), "{e}");
}

// ---------------------------------------------------------------------------
// Issue 16, defect 11: internally inconsistent models were imported and
// scored. The inputs are real fitted scikit-learn models with one attribute
// altered, written by `fixtures/sklearn/generate.py` (`invalid/`), which also
// records whether scikit-learn's own predict refuses each.

use std::io::Write;

use fleetscore_core::ModelKey;
use fleetscore_models::format::{self, FormatError};
use fleetscore_models::pickle::{self, NdArray};
use fleetscore_models::{
    import_with_limits, Estimator, ImportError, ImportLimits, Model, Pack, PackEntry,
};

fn fixture(rel: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sklearn")
        .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The error for `invalid/<name>`, which must be an inconsistency that
/// names the estimator and the attribute.
fn invalid(name: &str) -> String {
    match import_sklearn(&fixture(&format!("invalid/{name}"))) {
        Err(e @ ImportError::Invalid(_)) => e.to_string(),
        other => panic!("{name}: expected an invalid-model refusal, got {other:?}"),
    }
}

fn assert_names(e: &str, parts: &[&str]) {
    for p in parts {
        assert!(e.contains(p), "{p:?} missing from: {e}");
    }
}

#[test]
fn altered_n_support_is_refused_like_scikit_learn() {
    let e = invalid("altered_n_support.pkl");
    assert_names(
        &e,
        &[
            "OneClassSVM: _n_support says 103 support vectors but support_vectors_ has 104 rows",
            "scikit-learn refuses this model too",
            "re-export",
        ],
    );
}

#[test]
fn negative_gamma_is_refused() {
    let e = invalid("negative_gamma.pkl");
    assert_names(&e, &["OneClassSVM: _gamma is -0.333", "never negative"]);
}

#[test]
fn negative_degree_is_refused() {
    let e = invalid("negative_degree.pkl");
    assert_names(&e, &["OneClassSVM: degree is -1"]);
}

#[test]
fn support_indices_that_disagree_with_the_support_vectors_are_refused() {
    let e = invalid("support_too_short.pkl");
    assert_names(
        &e,
        &["OneClassSVM: support_ has 103 indices but support_vectors_ has 104 rows"],
    );
}

#[test]
fn zero_scaler_scale_is_refused() {
    let e = invalid("zero_scale.pkl");
    assert_names(&e, &["StandardScaler: scale_[1] is 0", "positive"]);
}

#[test]
fn scaler_width_disagreeing_with_n_features_in_is_refused() {
    let e = invalid("scaler_width.pkl");
    assert_names(&e, &["StandardScaler: n_features_in_ is 4", "3 features"]);
}

/// The real model the `invalid/` files were altered from.
fn good_model() -> Model {
    import_sklearn(&fixture("models/std_rbf_f3.p4.pkl")).unwrap()
}

fn with_gamma(gamma: f64) -> Model {
    let mut m = good_model();
    let Estimator::OneClassSvm(svm) = &mut m.estimator else {
        unreachable!()
    };
    svm.gamma = gamma;
    m
}

#[test]
fn stored_model_with_negative_gamma_is_refused_on_load() {
    // model.fsm, as the registry reads it.
    let json = format::to_json(&with_gamma(-0.5));
    match format::from_json(&json) {
        Err(FormatError::Invalid(e)) => {
            assert_names(&e.to_string(), &["OneClassSVM: _gamma is -0.5"]);
        }
        other => panic!("expected an invalid-model refusal, got {other:?}"),
    }
    // The pack, as scoring reads it.
    let entry = |model| PackEntry {
        key: ModelKey::new("d1", "t1").unwrap(),
        version: 1,
        model,
    };
    let bad = Pack::new(1, [entry(with_gamma(-0.5))]).encode();
    match Pack::decode(&bad) {
        Err(FormatError::Invalid(e)) => assert_names(&e.to_string(), &["_gamma is -0.5"]),
        other => panic!("expected an invalid-model refusal, got {other:?}"),
    }
    // A gamma of exactly 0 is what scikit-learn accepts (gamma >= 0).
    let zero = Pack::new(1, [entry(with_gamma(0.0))]).encode();
    assert!(Pack::decode(&zero).is_ok());
}

// ---------------------------------------------------------------------------
// Issue 16, defect 9 (model part): a 2 MB upload that decompressed to 1 GiB
// took 2.4 GB. Decompression and the pickle interpreter are bounded by the
// configured model-size limit.

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(data).unwrap();
    z.finish().unwrap()
}

#[test]
fn joblib_bomb_is_refused_at_the_configured_limit() {
    let bomb = zlib(&vec![0u8; 8 << 20]);
    let limits = ImportLimits::new(1 << 20);
    let e = import_with_limits(&bomb, &limits).unwrap_err();
    assert!(
        matches!(e, ImportError::TooLarge { limit, .. } if limit == 1 << 20),
        "{e:?}"
    );
    assert_names(
        &e.to_string(),
        &["model size limit of 1 MiB", "raise the model size limit"],
    );
    // A real compressed model passes at exactly its decompressed size and
    // is refused one byte below it.
    let real = fixture("models/std_rbf_f3.joblib-zlib");
    let size = fixture("models/std_rbf_f3.joblib").len() as u64;
    assert!(import_with_limits(&real, &ImportLimits::new(size)).is_ok());
    assert!(matches!(
        import_with_limits(&real, &ImportLimits::new(size - 1)),
        Err(ImportError::TooLarge { .. })
    ));
}

#[test]
fn gzip_bomb_is_refused_at_the_default_limit() {
    // 80 gzip members of 1 MiB of zeros: 80 MiB from about 80 KB, past the
    // default limit of 64 MiB (the old fixed limit was 1 GiB).
    let mut member = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    member.write_all(&vec![0u8; 1 << 20]).unwrap();
    let member = member.finish().unwrap();
    let bomb = member.repeat(80);
    let t = Instant::now();
    let e = import_sklearn(&bomb).unwrap_err();
    assert!(
        matches!(e, ImportError::TooLarge { limit, .. } if limit == ImportLimits::DEFAULT_MAX_DECOMPRESSED_BYTES),
        "{e:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
}

#[test]
fn plain_pickle_larger_than_the_limit_is_refused() {
    let real = fixture("models/std_rbf_f3.p4.pkl");
    let limits = ImportLimits::new(real.len() as u64 - 1);
    assert!(matches!(
        import_with_limits(&real, &limits),
        Err(ImportError::TooLarge { .. })
    ));
    if let Err(e) = import_with_limits(&real, &ImportLimits::new(real.len() as u64)) {
        panic!("{e}");
    }
}

#[test]
fn pickle_of_cheap_opcodes_is_refused_before_it_allocates() {
    // 200,000 empty lists in one list: 200 KB of input that used to build
    // about 100 bytes of values per input byte.
    let mut p = b"\x80\x02(".to_vec();
    p.extend(std::iter::repeat_n(b']', 200_000));
    p.extend_from_slice(b"l.");
    let limits = ImportLimits::new(1 << 20);
    let e = import_with_limits(&p, &limits).unwrap_err();
    assert!(
        matches!(e, ImportError::Pickle(pickle::PickleError::TooLarge { .. })),
        "{e:?}"
    );
    assert!(e.to_string().contains("model size limit"), "{e}");
    // The same for memo entries: one value memoised 1,000,000 times.
    let mut p = b"\x80\x04N".to_vec();
    p.extend(std::iter::repeat_n(0x94u8, 1_000_000));
    p.push(b'.');
    let e = pickle::load_with_limit(&p, limits.max_heap_bytes()).unwrap_err();
    assert!(matches!(e, pickle::PickleError::TooLarge { .. }), "{e:?}");
}

#[test]
fn array_claiming_more_elements_than_its_data_is_refused() {
    // numpy _reconstruct state: shape (2**40,), float64, 8 bytes of data.
    let mut p =
        b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C\x01b\x87R"
            .to_vec();
    p.extend_from_slice(b"(K\x01\x8a\x06\x00\x00\x00\x00\x00\x01\x85");
    p.extend_from_slice(b"cnumpy\ndtype\nX\x02\x00\x00\x00f8\x89\x88\x87R");
    p.extend_from_slice(b"(K\x03X\x01\x00\x00\x00<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb");
    p.extend_from_slice(b"\x89C\x08\x00\x00\x00\x00\x00\x00\xf0?tb.");
    let v = pickle::load(&p).unwrap();
    let e = NdArray::from_value(&v).unwrap_err();
    assert!(e.contains("needs 8796093022208 bytes, found 8"), "{e}");
}

/// Every altered tree, forest and boosting model of `invalid/` is refused
/// as inconsistent, naming the estimator and the attribute (the walk of
/// such a tree would read out of bounds or never end).
#[test]
fn altered_trees_are_refused_naming_the_attribute() {
    for (file, parts) in [
        (
            "tree_child_out_of_range.pkl",
            &["DecisionTreeRegressor", "tree_", "out of range"][..],
        ),
        (
            "tree_cycle.pkl",
            &["RandomForestRegressor", "estimators_[1].tree_", "cycle"],
        ),
        (
            "tree_left_only.pkl",
            &["ExtraTreeRegressor", "tree_", "a leaf has both -1"],
        ),
        (
            "tree_nan_threshold.pkl",
            &["DecisionTreeClassifier", "threshold", "NaN"],
        ),
        (
            "tree_feature_out_of_range.pkl",
            &["RandomForestClassifier", "estimators_[0]", "feature 3"],
        ),
        (
            "tree_values_shape.pkl",
            &[
                "ExtraTreesRegressor",
                "estimators_[0].tree_.values",
                "shape",
            ],
        ),
        (
            "iforest_features_out_of_range.pkl",
            &["IsolationForest", "estimators_features_[0]"],
        ),
        (
            "iforest_features_wrong_length.pkl",
            &["IsolationForest", "estimators_features_"],
        ),
        (
            "iforest_dpl_length.pkl",
            &["IsolationForest", "_decision_path_lengths"],
        ),
        (
            "iforest_apl_length.pkl",
            &["IsolationForest", "_average_path_length_per_tree"],
        ),
        (
            "gb_estimators_1d.pkl",
            &["GradientBoostingRegressor", "estimators_"],
        ),
        (
            "hgb_child_out_of_range.pkl",
            &["HistGradientBoostingRegressor", "_predictors[0][0]"],
        ),
        (
            "hgb_self_loop.pkl",
            &[
                "HistGradientBoostingRegressor",
                "_predictors[1][0]",
                "cycle",
            ],
        ),
    ] {
        let e = invalid(file);
        assert_names(&e, parts);
    }
}

// ---------------------------------------------------------------------------
// LocalOutlierFactor (issue 18): a search tree or neighbour count altered
// after fitting would make the replayed query read out of bounds or score
// with the wrong neighbours; each is refused naming the attribute.

#[test]
fn lof_idx_array_that_is_not_a_permutation_is_refused() {
    let e = invalid("lof_idx_not_permutation.pkl");
    assert_names(
        &e,
        &["LocalOutlierFactor", "_tree.idx_array", "not a permutation"],
    );
}

#[test]
fn lof_node_range_past_the_training_points_is_refused() {
    let e = invalid("lof_node_range.pkl");
    assert_names(&e, &["LocalOutlierFactor", "_tree.node_data", "0..105"]);
}

#[test]
fn lof_n_neighbors_above_the_training_points_is_refused() {
    let e = invalid("lof_k_too_large.pkl");
    assert_names(&e, &["LocalOutlierFactor", "n_neighbors_", "101"]);
}

/// Every fixture model (each family, protocol 4) survives `model.fsm`
/// and the pack unchanged: equal after the round trip, the same content
/// hash, the same scores bit for bit. JSON has no infinity, so a tree's
/// `+inf` threshold or a step function's last bound must come back too.
#[test]
fn every_fixture_family_round_trips_through_model_fsm_and_the_pack() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sklearn");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("manifest.json")).unwrap()).unwrap();
    let mut families = std::collections::BTreeSet::new();
    for e in manifest["files"].as_array().unwrap() {
        if e["variant"] != "p4.pkl" {
            continue;
        }
        let file = e["file"].as_str().unwrap();
        let m = import_sklearn(&std::fs::read(root.join(file)).unwrap())
            .unwrap_or_else(|err| panic!("{file}: {err}"));
        let back =
            format::from_json(&format::to_json(&m)).unwrap_or_else(|err| panic!("{file}: {err}"));
        assert!(back == m, "{file}: model.fsm changed the model");
        let key = ModelKey::new("d", "t").unwrap();
        let pack = Pack::new(
            1,
            [PackEntry {
                key,
                version: 1,
                model: m.clone(),
            }],
        );
        let decoded = Pack::decode(&pack.encode()).unwrap_or_else(|err| panic!("{file}: {err}"));
        let pm = &decoded.entries()[0].model;
        assert!(*pm == m, "{file}: the pack changed the model");
        assert_eq!(format::content_hash(pm), format::content_hash(&m), "{file}");
        let w = m.n_features;
        let rows: Vec<f64> = (0..40 * w)
            .map(|i| ((i * 37) % 23) as f64 / 7.0 - 1.5)
            .collect();
        let (mut a, mut la) = (vec![0.0; 40], vec![0u32; 40]);
        let (mut b, mut lb) = (vec![0.0; 40], vec![0u32; 40]);
        m.evaluate_into(&rows, w, &mut a, &mut la).unwrap();
        pm.evaluate_into(&rows, w, &mut b, &mut lb).unwrap();
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!((bits(&a), la), (bits(&b), lb), "{file}");
        families.insert(e["family"].as_str().unwrap_or("OneClassSVM").to_string());
    }
    assert!(families.len() >= 10, "{families:?}");
}

/// An SVC whose per-class support-vector counts no longer add up to its
/// support vectors (CVE-2020-28975's shape) is refused, as scikit-learn
/// refuses it.
#[test]
fn svc_n_support_that_disagrees_with_the_support_vectors_is_refused() {
    let e = invalid("svc_n_support.pkl");
    assert_names(&e, &["SVC", "_n_support"]);
}
