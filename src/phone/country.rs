//! ISO 3166 region codes (`US`, `DE`) as the policy lists name them, checked
//! against libphonenumber's regions, which is what a recipient's region is
//! compared with.

/// A region libphonenumber knows, in its upper-case code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CountryId(phonenumber::country::Id);

/// Not a region code libphonenumber knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an ISO 3166 region code such as US or DE")]
pub struct NotACountryId;

impl CountryId {
    /// `us`, ` US ` → `US`; `None` for a code libphonenumber does not know.
    pub fn parse(code: &str) -> Option<CountryId> {
        code.trim()
            .to_ascii_uppercase()
            .parse::<phonenumber::country::Id>()
            .ok()
            .map(CountryId)
    }

    pub(crate) fn as_str(&self) -> &str {
        self.0.as_ref()
    }
}

impl std::str::FromStr for CountryId {
    type Err = NotACountryId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CountryId::parse(s).ok_or(NotACountryId)
    }
}

str_views!(CountryId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_codes() {
        assert_eq!(CountryId::parse(" de ").unwrap(), "DE");
        assert_eq!(CountryId::parse("US").unwrap().as_str(), "US");
        assert_eq!(CountryId::parse("XX"), None);
        assert_eq!(CountryId::parse("USA"), None);
    }
}
