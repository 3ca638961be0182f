//! Numbers in import input are kept exactly or refused: a number the ledger cannot write
//! with the same value (more digits than a double holds, an integer beyond 64 bits) is an
//! error naming it, never a silent rounding.

use crate::ledger::number::{decimal, write_number};
use anyhow::{Result, bail};

/// Fails on the first number token of the JSON `text` whose value the ledger would change.
pub fn check_exact(text: &str) -> Result<()> {
    for token in number_tokens(text) {
        let Ok(serde_json::Value::Number(n)) = serde_json::from_str::<serde_json::Value>(token) else { continue };
        let mut written = Vec::new();
        write_number(&mut written, &n);
        let written = String::from_utf8(written).expect("numbers are ASCII");
        if decimal(token) != decimal(&written) && !(is_zero(token) && is_zero(&written)) {
            bail!(
                "the number {token} cannot be stored exactly (it would become {written}); \
                 quote it as a string to keep every digit"
            );
        }
    }
    Ok(())
}

fn is_zero(text: &str) -> bool {
    decimal(text).is_some_and(|d| d.digits.is_empty())
}

/// The number tokens of a JSON text, outside strings, in order.
fn number_tokens(text: &str) -> impl Iterator<Item = &str> {
    let bytes = text.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() {
            match bytes[i] {
                b'"' => {
                    i += 1;
                    while i < bytes.len() && bytes[i] != b'"' {
                        i += if bytes[i] == b'\\' { 2 } else { 1 };
                    }
                    i += 1;
                }
                b'-' | b'0'..=b'9' => {
                    let start = i;
                    while i < bytes.len() && matches!(bytes[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                        i += 1;
                    }
                    return Some(&text[start..i]);
                }
                _ => i += 1,
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_skip_strings() {
        let found: Vec<&str> = number_tokens(r#"{"a":-1.5e+3,"b":"12 \"34\"","c":[0,7]}"#).collect();
        assert_eq!(found, ["-1.5e+3", "0", "7"]);
    }

    #[test]
    fn exact_numbers_pass_and_others_are_named() {
        for ok in ["1.2e+31", "1e20", "0.1", "-0", "18446744073709551615", "-9223372036854775808", "100000000000000000000000000000", "1.50"]
        {
            check_exact(&format!("[{ok}]")).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["123456789012345678901234567890", "0.1000000000000000000001"] {
            let err = check_exact(&format!("[{bad}]")).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(bad) && err.contains("cannot be stored exactly"), "{bad}: {err}");
        }
    }
}
