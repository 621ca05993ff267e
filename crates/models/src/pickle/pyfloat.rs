//! Numbers printed as Python prints them, for label texts: a classifier's
//! label is `str(x)` of an item of its `classes_`, and fleetscore's output
//! must carry the same text.

/// Python's `repr(x)` (and `str(x)`) of a float, which numpy 2 also prints
/// for `str(np.float64(x))`: the shortest digits that read back as `x`,
/// positional when the decimal exponent is in `-4..16` (`0.0001`, `1.0`,
/// `1000000000000000.0`) and in exponent form otherwise (`1e-05`,
/// `1.5e+16`, `5e-324`); `nan`, `inf`, `-inf`.
pub fn py_float_repr(x: f64) -> String {
    if let Some(s) = non_finite(x) {
        return s.to_string();
    }
    // Rust's `{:e}` prints the shortest round-trip digits.
    let (neg, digits, exp) = split(&format!("{x:e}"));
    layout(neg, &digits, exp, !(-4..16).contains(&exp))
}

/// numpy's `str(np.float32(x))`: the shortest digits that read back as the
/// float32 `x`, positional for `1e-4 <= |x| < 1e6` and zero, exponent form
/// otherwise (`1e+06`, `1e-04` for float32(0.0001), which is just below
/// 1e-4).
pub(crate) fn numpy_f32_str(x: f32) -> String {
    if let Some(s) = non_finite(f64::from(x)) {
        return s.to_string();
    }
    let (neg, digits, exp) = split(&format!("{x:e}"));
    let a = f64::from(x).abs();
    let positional = a == 0.0 || (1e-4..1e6).contains(&a);
    layout(neg, &digits, exp, !positional)
}

fn non_finite(x: f64) -> Option<&'static str> {
    if x.is_nan() {
        Some("nan")
    } else if x == f64::INFINITY {
        Some("inf")
    } else if x == f64::NEG_INFINITY {
        Some("-inf")
    } else {
        None
    }
}

/// Splits Rust's `-d.ddde-7` into (negative, "dddd", -7).
fn split(s: &str) -> (bool, String, i32) {
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (mantissa, exp) = s.split_once('e').unwrap_or((s, "0"));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    (neg, digits, exp.parse().unwrap_or(0))
}

/// Lays out `0.d1d2… × 10^(exp+1)` as Python does.
fn layout(neg: bool, digits: &str, exp: i32, scientific: bool) -> String {
    let mut out = String::with_capacity(digits.len() + 8);
    if neg {
        out.push('-');
    }
    if scientific {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.unsigned_abs()));
    } else if exp >= 0 {
        let whole = exp.unsigned_abs() as usize + 1;
        if digits.len() <= whole {
            out.push_str(digits);
            out.extend(std::iter::repeat_n('0', whole - digits.len()));
            out.push_str(".0");
        } else {
            out.push_str(&digits[..whole]);
            out.push('.');
            out.push_str(&digits[whole..]);
        }
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', exp.unsigned_abs() as usize - 1));
        out.push_str(digits);
    }
    out
}

/// Widest Python int printed as a label (bytes of its two's-complement
/// encoding); wider ones are refused rather than divided for long.
const MAX_INT_BYTES: usize = 64;

/// Decimal text of a Python int pickled as little-endian two's complement
/// (`LONG1`/`LONG4`).
pub(crate) fn python_int_str(le: &[u8]) -> Result<String, String> {
    if le.len() > MAX_INT_BYTES {
        return Err(format!(
            "an integer label of {} bytes is wider than the {MAX_INT_BYTES} fleetscore prints",
            le.len()
        ));
    }
    let neg = le.last().is_some_and(|b| b & 0x80 != 0);
    let mut mag: Vec<u8> = le.to_vec();
    if neg {
        // Two's complement: invert and add one.
        let mut carry = true;
        for b in &mut mag {
            *b = !*b;
            if carry {
                let (v, c) = b.overflowing_add(1);
                *b = v;
                carry = c;
            }
        }
    }
    // Big-endian u32 limbs, divided by 10^9 until zero.
    let mut limbs: Vec<u32> = mag
        .chunks(4)
        .rev()
        .map(|c| {
            let mut a = [0u8; 4];
            a[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(a)
        })
        .collect();
    let mut parts: Vec<u32> = Vec::new();
    while limbs.iter().any(|&l| l != 0) {
        let mut rem = 0u64;
        for l in &mut limbs {
            let cur = (rem << 32) | u64::from(*l);
            *l = (cur / 1_000_000_000) as u32;
            rem = cur % 1_000_000_000;
        }
        parts.push(rem as u32);
    }
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    match parts.split_last() {
        None => out.push('0'),
        Some((top, rest)) => {
            out.push_str(&top.to_string());
            for p in rest.iter().rev() {
                out.push_str(&format!("{p:09}"));
            }
        }
    }
    Ok(out)
}
