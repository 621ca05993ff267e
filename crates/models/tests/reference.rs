//! The reference deployment's 15 legacy pickles (scikit-learn 0.19/0.20,
//! protocol 3, old module paths, old attribute names) must give exactly the
//! predictions in `../shared/reference/expected_predictions.csv`.

use std::collections::HashMap;
use std::path::PathBuf;

use fleetscore_models::{import_sklearn, is_inlier};

fn reference() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!(
            "skipping: {} not found (CI has ../shared beside the checkout)",
            p.display()
        );
        None
    }
}

#[test]
fn reference_models_reproduce_expected_predictions() {
    let Some(root) = reference() else { return };
    let mut models = HashMap::new();
    for d in 1..=3 {
        for t in 1..=5 {
            let bytes = std::fs::read(root.join(format!("models/model_{d}_{t}"))).unwrap();
            let m = import_sklearn(&bytes).unwrap_or_else(|e| panic!("model_{d}_{t}: {e}"));
            assert_eq!(m.n_features, 1);
            models.insert((d.to_string(), t.to_string()), m);
        }
    }
    let expected = std::fs::read_to_string(root.join("expected_predictions.csv")).unwrap();
    let (mut rows, mut anomalies, mut zeros, mut max_diff) = (0, 0, 0, 0.0f64);
    for (i, line) in expected.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let m = &models[&(f[1].to_string(), f[2].to_string())];
        let val: f64 = f[3].parse().unwrap();
        let want_pred: u8 = f[4].parse().unwrap();
        let want_dec: f64 = f[5].parse().unwrap();
        let mut dec = Vec::new();
        m.decision_function(&[val], 1, &mut dec).unwrap();
        let pred = u8::from(!is_inlier(dec[0]));
        assert_eq!(
            pred,
            want_pred,
            "line {}: {line}: decision {}",
            i + 1,
            dec[0]
        );
        max_diff = max_diff.max((dec[0] - want_dec).abs());
        rows += 1;
        anomalies += usize::from(pred);
        zeros += usize::from(dec[0] == 0.0);
    }
    assert!(max_diff <= 1e-9, "max |decision - expected| = {max_diff:e}");
    assert_eq!(rows, 17_768);
    assert_eq!(anomalies, 6_757);
    eprintln!(
        "{rows} rows, {anomalies} anomalies, {zeros} exact-zero decisions, max diff {max_diff:e}"
    );
}
