//! What a reading's value may be: any finite `f64`.

/// A reading's value that is not a finite number.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("value {value} is not a finite number; NaN and infinities are refused")]
pub struct ValueError {
    /// The refused value.
    pub value: f64,
}

/// `value` if a reading may carry it: any finite `f64` (NaN and
/// infinities are refused by every source, as InfluxDB's line protocol
/// does: a model cannot score them and they poison window sums).
#[inline]
pub fn check_value(value: f64) -> Result<f64, ValueError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(ValueError { value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_must_be_finite() {
        assert_eq!(check_value(-1.5), Ok(-1.5));
        assert!(check_value(f64::NAN).is_err());
        assert!(check_value(f64::INFINITY).is_err());
        let e = check_value(f64::NEG_INFINITY).unwrap_err().to_string();
        assert_eq!(
            e,
            "value -inf is not a finite number; NaN and infinities are refused"
        );
    }
}
