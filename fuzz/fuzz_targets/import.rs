//! Fuzzes `fleetscore_models::import_sklearn`: decompression (joblib zlib /
//! gzip), the restricted pickle interpreter and the scikit-learn translator.
//!
//! Any input must end in `Ok` or `Err`, never a panic, abort, stack overflow,
//! out-of-memory or hang. When the import succeeds, the model is evaluated on
//! a few rows, so a model the importer accepts can never make scoring panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(model) = fleetscore_models::import_sklearn(data) else {
        return;
    };
    let width = model.n_features;
    // Three rows: zeros, ones, and a mix of extreme values.
    let mut rows = vec![0.0; width];
    rows.extend(std::iter::repeat_n(1.0, width));
    rows.extend((0..width).map(|i| [-1e300, 1e300, f64::NAN, -0.0][i % 4]));
    let (mut score, mut label) = ([0.0; 3], [0u32; 3]);
    model
        .evaluate_into(&rows, width, &mut score, &mut label)
        .expect("rows of the model's own width are accepted");
    for &l in &label {
        match model.kind() {
            fleetscore_models::Kind::Outlier => assert!(l <= 1),
            fleetscore_models::Kind::Classifier => {
                assert!(l == fleetscore_models::NO_LABEL || (l as usize) < model.classes().len())
            }
            fleetscore_models::Kind::Regressor => {}
        }
    }
    // predict goes through the same path plus the label rule.
    let labels = model.predict(&rows, width).expect("same rows");
    assert_eq!(labels.len(), 3);
    // A validated model also survives its own checks and description.
    model.validate().expect("an imported model is valid");
    let _ = model.describe();
});
