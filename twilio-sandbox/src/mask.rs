//! Log-safe renderings of personal data.

/// Keep the first 3 and last 2 characters of a phone number (`+14…23`), so
/// logs can be correlated without holding whole numbers.
pub(crate) fn phone(number: &str) -> String {
    let chars: Vec<char> = number.chars().collect();
    if chars.len() <= 5 {
        return "…".to_owned();
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn masks_middle() {
        assert_eq!(super::phone("+14155550123"), "+14…23");
        assert_eq!(super::phone("+1234"), "…");
    }
}
