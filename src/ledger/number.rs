//! Numbers in a ledger body, laid out by our own rule (docs/ledger-format.md, "Numbers").
//!
//! A JSON library's float layout is not a format: serde_json's changed between releases
//! (`1e20` became `1e+20`). Hashes cover the bytes, so the rule is ours and fixed: the
//! shortest digits that read back as the same double, then this module's layout, which is
//! the one every ledger so far was written with.

use serde_json::Number;

/// Writes `n` canonically: integers in plain decimal, other numbers as [`write_float`].
pub fn write_number(out: &mut Vec<u8>, n: &Number) {
    if let Some(i) = n.as_i64() {
        out.extend_from_slice(i.to_string().as_bytes());
    } else if let Some(u) = n.as_u64() {
        out.extend_from_slice(u.to_string().as_bytes());
    } else {
        write_float(out, n.as_f64().expect("a JSON number is an integer or a finite double"));
    }
}

/// A finite double: with `d₁d₂…dₙ` its shortest round-trip digits and `E` the exponent of
/// `d₁.d₂…dₙ × 10^E`, fixed notation when −5 ≤ E < 16 (always with a fraction: `5.0`,
/// `0.00001`), else `d₁[.d₂…dₙ]e±E` (`1e+16`, `1.5e-10`). Zero is `0.0` or `-0.0`.
pub fn write_float(out: &mut Vec<u8>, x: f64) {
    if x.is_sign_negative() {
        out.push(b'-');
    }
    let (digits, exp) = shortest(x.abs());
    if digits.is_empty() {
        out.extend_from_slice(b"0.0");
    } else if (-5..16).contains(&exp) {
        if exp < 0 {
            out.extend_from_slice(b"0.");
            out.extend(std::iter::repeat_n(b'0', (-exp - 1) as usize));
            out.extend_from_slice(&digits);
        } else {
            let whole = exp as usize + 1;
            if digits.len() > whole {
                out.extend_from_slice(&digits[..whole]);
                out.push(b'.');
                out.extend_from_slice(&digits[whole..]);
            } else {
                out.extend_from_slice(&digits);
                out.extend(std::iter::repeat_n(b'0', whole - digits.len()));
                out.extend_from_slice(b".0");
            }
        }
    } else {
        out.push(digits[0]);
        if digits.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        out.push(b'e');
        out.push(if exp < 0 { b'-' } else { b'+' });
        out.extend_from_slice(exp.unsigned_abs().to_string().as_bytes());
    }
}

/// The shortest round-trip significant digits of `x ≥ 0` (none for zero) and the exponent
/// of the first digit.
fn shortest(x: f64) -> (Vec<u8>, i32) {
    let mut buffer = ryu::Buffer::new();
    decimal(buffer.format_finite(x)).map(|d| (d.digits, d.exp)).unwrap_or_default()
}

/// A decimal number's significant digits (no leading or trailing zeros) and the exponent of
/// the first one; `digits` is empty for zero.
#[derive(Debug, PartialEq, Eq)]
pub struct Decimal {
    pub negative: bool,
    pub digits: Vec<u8>,
    pub exp: i32,
}

/// Reads a JSON number's text (`-12.5e+3`) as a [`Decimal`]; `None` when it is not one.
pub fn decimal(text: &str) -> Option<Decimal> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().ok()?),
        None => (rest, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() || !whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let all: Vec<u8> = whole.bytes().chain(fraction.bytes()).collect();
    let Some(first) = all.iter().position(|&b| b != b'0') else {
        return Some(Decimal { negative, digits: Vec::new(), exp: 0 });
    };
    let last = all.iter().rposition(|&b| b != b'0').expect("a non-zero digit exists");
    let exp = exponent.checked_add(whole.len() as i64 - 1 - first as i64)?;
    Some(Decimal { negative, digits: all[first..=last].to_vec(), exp: i32::try_from(exp).ok()? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    fn canonical(x: f64) -> String {
        let mut out = Vec::new();
        write_float(&mut out, x);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_documented_examples() {
        for (x, text) in [
            (0.1, "0.1"),
            (2.5, "2.5"),
            (5.0, "5.0"),
            (123.0, "123.0"),
            (-1.5, "-1.5"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1e-5, "0.00001"),
            (1.2345e-4, "0.00012345"),
            (1e-6, "1e-6"),
            (1.5e-10, "1.5e-10"),
            (1e15, "1000000000000000.0"),
            (1234567890123456.8, "1234567890123456.8"),
            (1e16, "1e+16"),
            (1.2345678901234568e16, "1.2345678901234568e+16"),
            (1e20, "1e+20"),
            (1.2e31, "1.2e+31"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
        ] {
            assert_eq!(canonical(x), text, "{x:e}");
        }
    }

    /// Every ledger so far was written through serde_json 1.0.154; the layout must not move.
    #[test]
    fn same_bytes_as_the_ledgers_already_written() {
        let mut rng = StdRng::seed_from_u64(11);
        for i in 0..200_000 {
            let x =
                if i % 2 == 0 { f64::from_bits(rng.r#gen::<u64>()) } else { rng.gen_range(-1e6..1e6) * 10f64.powi(rng.gen_range(-30..30)) };
            if !x.is_finite() {
                continue;
            }
            assert_eq!(canonical(x), serde_json::to_string(&x).unwrap(), "{x:e}");
            assert_eq!(canonical(x).parse::<f64>().unwrap().to_bits(), x.to_bits(), "round trip of {x:e}");
        }
    }

    #[test]
    fn decimals_are_read_whatever_their_spelling() {
        let d = |s: &str| decimal(s).unwrap();
        assert_eq!(d("1.2e+31"), d("12000000000000000000000000000000"));
        assert_eq!(d("0.00100"), Decimal { negative: false, digits: b"1".to_vec(), exp: -3 });
        assert_eq!(d("-0"), Decimal { negative: true, digits: vec![], exp: 0 });
        assert!(decimal("1.").is_some() && decimal(".5").is_none() && decimal("1e").is_none());
    }
}
