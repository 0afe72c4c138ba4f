//! Hex text for bytes: keys in config files and on the command line, frames in profiles.

/// `"5B B2 01"` or `"5BB201"`.
pub fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let digits: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if !digits.is_ascii() {
        return Err(format!("{s:?} is not hex"));
    }
    if digits.len() % 2 != 0 {
        return Err(format!("{s:?}: odd number of hex digits"));
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).map_err(|_| format!("{s:?} is not hex")))
        .collect()
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_what_is_not_hex() {
        assert_eq!(
            parse_hex("EB 01 40 00 AA").unwrap(),
            [0xEB, 1, 0x40, 0, 0xAA]
        );
        assert_eq!(to_hex(&parse_hex("5bB201").unwrap()), "5bb201");
        for bad in ["5", "zz", "é1", "1é"] {
            assert!(parse_hex(bad).is_err(), "{bad:?}");
        }
    }
}
