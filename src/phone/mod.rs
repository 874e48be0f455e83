//! Phone numbers at the edge: parsed once into a [`Recipient`] that is known
//! to be E.164 and valid by libphonenumber's rules, so nothing past the
//! handler re-checks a string.
//!
//! | module | owns |
//! |---|---|
//! | this one | the [`Recipient`] type, why a number is refused ([`RecipientError`], [`E164_HELP`]), the E.164 shape, masking |
//! | [`numbering`] | the [`NumberingPlan`]: libphonenumber's metadata by calling code, with the region and line-type patterns it compiles once and owns |
//! | [`cache`] | the [`RecipientCache`]: verdicts per number (under a keyed hash, never the number) over a shared plan |
//! | [`sender`] | numbers and senders as written in the configuration and by Twilio, checked for their form only: [`E164`], [`SenderId`], [`Sender`] |
//! | [`country`] | [`CountryId`]: a region code libphonenumber knows |
//!
//! No state here is process-wide (libphonenumber's database, and the
//! pattern cache its parser uses, belong to the `phonenumber` crate).
//! Whoever parses recipients on a request path holds a [`RecipientCache`]
//! and, through it, an `Arc` of one [`NumberingPlan`]: the courier builds
//! both, start-up warms the plan in the background, status callbacks parse
//! with the courier's. [`Recipient::parse`] builds a plan of its own for one
//! call, for tests and one-off checks.

use std::fmt;

pub(crate) mod cache;
pub(crate) mod country;
pub(crate) mod numbering;
pub(crate) mod sender;

pub(crate) use cache::{RecipientCache, VERDICT_CACHE_CAPACITY};
pub use country::{CountryId, NotACountryId};
pub use numbering::NumberingPlan;
pub use sender::{NotASenderId, NotE164, Sender, SenderId, E164};

/// What the end user is told when a number is refused. Kept free of the
/// number itself: errors travel to Kratos's logs.
pub(crate) const E164_HELP: &str = "the recipient must be a phone number in E.164 form: \
    '+', then the country calling code and the subscriber number, 2 to 15 digits \
    in all, no spaces or punctuation, no leading zero (for example +4930901820)";

/// Why a recipient was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecipientError {
    #[error("not in E.164 form")]
    NotE164,
    #[error("not a valid phone number for its country")]
    NotValid,
}

/// The kind of line, from libphonenumber's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineType {
    Mobile,
    FixedLine,
    FixedLineOrMobile,
    TollFree,
    PremiumRate,
    SharedCost,
    Voip,
    Other,
}

/// A phone number in E.164 form that libphonenumber considers valid.
#[derive(Clone, PartialEq, Eq)]
pub struct Recipient {
    e164: String,
    calling_code: u16,
    /// ISO 3166 region (`US`, `DE`), when the number maps to one region.
    region: Option<phonenumber::country::Id>,
    line_type: LineType,
}

impl Recipient {
    /// [`Recipient::parse_with`] a numbering plan made for this call alone:
    /// it loads the number's calling code and compiles the patterns the
    /// number reaches (about 2 ms for a +1 number in a release build, where
    /// a shared plan takes microseconds). For tests and one-off checks;
    /// a request path parses through a [`RecipientCache`], whose plan is
    /// shared and compiled once.
    pub fn parse(input: &str) -> Result<Recipient, RecipientError> {
        Recipient::parse_with(&NumberingPlan::new(), input)
    }

    /// Trim surrounding white space, require strict E.164 (`+` and 2 to 15
    /// digits, the first not zero), then require libphonenumber validity,
    /// judged by `plan`. The recipient is the number's canonical form (see
    /// [`Recipient::e164`]).
    pub fn parse_with(plan: &NumberingPlan, input: &str) -> Result<Recipient, RecipientError> {
        let s = input.trim();
        if !is_e164_shape(s) {
            return Err(RecipientError::NotE164);
        }
        let number = plan.parse_e164(s).ok_or(RecipientError::NotValid)?;
        let calling_code = number.code().value();
        // The national significant number with its leading zero, where the
        // country keeps one (Italy: +39 02...). The crate's `number_type` and
        // `metadata` drop that zero (and call Italian landlines invalid while
        // its `is_valid` accepts them); `is_valid` and libphonenumber keep it.
        let national = number.national().to_string();
        let (region, kind) = plan
            .classify(calling_code, &national)
            .ok_or(RecipientError::NotValid)?;
        let line_type = match kind {
            phonenumber::Type::Unknown => return Err(RecipientError::NotValid),
            phonenumber::Type::Mobile => LineType::Mobile,
            phonenumber::Type::FixedLine => LineType::FixedLine,
            phonenumber::Type::FixedLineOrMobile => LineType::FixedLineOrMobile,
            phonenumber::Type::TollFree => LineType::TollFree,
            phonenumber::Type::PremiumRate => LineType::PremiumRate,
            phonenumber::Type::SharedCost => LineType::SharedCost,
            phonenumber::Type::Voip => LineType::Voip,
            _ => LineType::Other,
        };
        let region = region.id();
        // The canonical form, which is the input itself unless a trunk
        // prefix followed the calling code (+44 0 7400...): libphonenumber
        // drops it, and so must every key and the provider, or the same
        // phone would count as two recipients.
        let as_written = s
            .strip_prefix('+')
            .is_some_and(|digits| numbering::reads_as(digits, calling_code, &national));
        Ok(Recipient {
            e164: if as_written {
                s.to_owned()
            } else {
                format!("+{calling_code}{national}")
            },
            calling_code,
            region,
            line_type,
        })
    }

    /// The number in canonical E.164 form (a trunk prefix after the calling
    /// code removed), for the provider and for every key. Never log this.
    pub fn e164(&self) -> &str {
        &self.e164
    }

    /// The country calling code (`1`, `49`): a bounded set, safe for metrics.
    pub fn calling_code(&self) -> u16 {
        self.calling_code
    }

    /// ISO 3166 region code, when libphonenumber knows it.
    pub(crate) fn region(&self) -> Option<&str> {
        self.region.as_ref().map(|id| id.as_ref())
    }

    pub fn line_type(&self) -> LineType {
        self.line_type
    }

    /// `+49…12`: the country code and the last two digits, enough to tell
    /// numbers apart in a log without revealing them.
    pub fn masked(&self) -> String {
        let tail = &self.e164[self.e164.len() - 2..];
        format!("+{}…{}", self.calling_code, tail)
    }
}

/// `+` then 2 to 15 ASCII digits, the first not zero: E.164's form, without
/// asking libphonenumber whether the number exists.
pub(crate) fn is_e164_shape(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|digits| {
        (2..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    })
}

/// `Debug` is masked too, so `{:?}` in a log or a panic cannot leak a number.
impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recipient({})", self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_national_prefix_after_the_calling_code_is_refused_where_none_belongs() {
        // "+1 1 415...": libphonenumber refuses it; reading it with US rules
        // alone would accept +14155550123.
        assert_eq!(
            Recipient::parse("+114155550123"),
            Err(RecipientError::NotValid)
        );
    }

    #[test]
    fn a_trunk_prefix_after_the_calling_code_is_dropped() {
        let r = Recipient::parse("+4407400123456").unwrap();
        assert_eq!(r.e164(), "+447400123456");
        assert_eq!(r.region(), Some("GB"));
        assert_eq!(
            Recipient::parse("+447400123456").unwrap().e164(),
            "+447400123456"
        );
        // Italian numbers keep their leading zero: it is not a trunk prefix.
        let it = Recipient::parse("+390212345678").unwrap();
        assert_eq!(it.e164(), "+390212345678");
        assert_eq!(it.region(), Some("IT"));
        assert_eq!(it.line_type(), LineType::FixedLine);
    }

    #[test]
    fn shared_calling_codes_find_their_region() {
        let plan = NumberingPlan::new();
        for (e164, region) in [
            ("+14155550123", "US"),
            ("+16135550123", "CA"),
            ("+18765550123", "JM"),
            ("+447400123456", "GB"),
            ("+79123456789", "RU"),
            ("+77012345678", "KZ"),
        ] {
            assert_eq!(
                Recipient::parse_with(&plan, e164).unwrap().region(),
                Some(region),
                "{e164}"
            );
        }
    }

    #[test]
    fn accepts_valid_e164_and_trims() {
        let r = Recipient::parse("  +14155550123\n").unwrap();
        assert_eq!(r.e164(), "+14155550123");
        assert_eq!(r.calling_code(), 1);
        assert_eq!(r.region(), Some("US"));
        assert_eq!(r.masked(), "+1…23");
        let de = Recipient::parse("+4915123456789").unwrap();
        assert_eq!(de.region(), Some("DE"));
        assert_eq!(de.line_type(), LineType::Mobile);
    }

    #[test]
    fn refuses_what_is_not_e164() {
        for bad in [
            "",
            "+",
            "+1",
            "14155550123",
            "+1 415 555 0123",
            "+1-415-555-0123",
            "+014155550123",
            "+1415555012345678",
            "++14155550123",
            "+1415555O123",
            "+１４１５５５５０１２３",
            "tel:+14155550123",
        ] {
            assert_eq!(
                Recipient::parse(bad),
                Err(RecipientError::NotE164),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn refuses_invalid_numbers() {
        // Right shape, but no such numbering plan.
        assert_eq!(
            Recipient::parse("+99912345678"),
            Err(RecipientError::NotValid)
        );
        assert_eq!(Recipient::parse("+1234"), Err(RecipientError::NotValid));
    }

    #[test]
    fn a_shared_plan_and_a_plan_of_ones_own_agree() {
        let plan = NumberingPlan::new();
        for n in [
            "+14155550123",
            "+4915123456789",
            "+390212345678",
            "+4407400123456",
            "+80012345678",
            "+99912345678",
            "+1234",
        ] {
            assert_eq!(Recipient::parse_with(&plan, n), Recipient::parse(n), "{n}");
        }
    }

    #[test]
    fn debug_is_masked() {
        let r = Recipient::parse("+14155550123").unwrap();
        assert!(!format!("{r:?}").contains("4155550123"));
    }
}
