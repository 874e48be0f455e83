//! Language tags (BCP 47), held in the one form Twilio documents: `en-US`.
//!
//! Tags compare case-insensitively, but a map of sentences does not: a table
//! named `en-US` in the file, `en-us` from an environment variable name and
//! `en-us` in an `Accept-Language` header must find the same entry. So every
//! tag is normalised when it is read, here, and only normalised tags exist.

use super::values::str_views;

/// A normalised language tag: primary subtag in lower case, two-letter
/// (region) subtags in upper case, the others as given, joined by `-`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LanguageTag(String);

/// Not shaped like a language tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a language tag such as en-US")]
pub struct NotALanguageTag;

impl LanguageTag {
    /// `en-us` → `en-US`, `DE` → `de`, `zh_hant_TW` → `zh-hant-TW`; `None`
    /// for anything not shaped like a tag (a primary subtag of 2 or 3
    /// letters, then subtags of 1 to 8 letters or digits).
    pub fn normalize(tag: &str) -> Option<LanguageTag> {
        let mut parts = tag.trim().split(['-', '_']);
        let primary = parts.next()?;
        if primary.len() < 2
            || primary.len() > 3
            || !primary.bytes().all(|b| b.is_ascii_alphabetic())
        {
            return None;
        }
        let mut out = primary.to_ascii_lowercase();
        for p in parts {
            if p.is_empty() || p.len() > 8 || !p.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return None;
            }
            out.push('-');
            if p.len() == 2 {
                out.push_str(&p.to_ascii_uppercase());
            } else {
                out.push_str(p);
            }
        }
        Some(LanguageTag(out))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for LanguageTag {
    type Err = NotALanguageTag;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LanguageTag::normalize(s).ok_or(NotALanguageTag)
    }
}

/// Lets a map keyed by tags be searched with a `&str` that is already in
/// normal form; order and equality are the inner string's, as `Borrow`
/// requires.
impl std::borrow::Borrow<str> for LanguageTag {
    fn borrow(&self) -> &str {
        &self.0
    }
}

str_views!(LanguageTag);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_normalised() {
        let n = |s: &str| LanguageTag::normalize(s).map(|t| t.as_str().to_owned());
        assert_eq!(n("en-us").as_deref(), Some("en-US"));
        assert_eq!(n("DE").as_deref(), Some("de"));
        assert_eq!(n("zh_hant_TW").as_deref(), Some("zh-hant-TW"));
        assert_eq!(n(" de-at ").as_deref(), Some("de-AT"));
        assert_eq!(n("e"), None);
        assert_eq!(n("en-<x>"), None);
        assert_eq!(n("en--US"), None);
        assert_eq!("EN-gb".parse::<LanguageTag>().unwrap(), "en-GB");
        assert!("english!".parse::<LanguageTag>().is_err());
    }
}
