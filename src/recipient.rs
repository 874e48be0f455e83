//! Phone numbers at the edge: parsed once into a [`Recipient`] that is known
//! to be E.164 and valid by libphonenumber's rules, so nothing past the
//! handler re-checks a string.

use std::fmt;

use phonenumber::metadata::DATABASE;

/// What the end user is told when a number is refused. Kept free of the
/// number itself: errors travel to Kratos's logs.
pub const E164_HELP: &str = "the recipient must be a phone number in E.164 form: \
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
    /// Trim surrounding white space, require strict E.164 (`+` and 2 to 15
    /// digits, the first not zero), then require libphonenumber validity.
    pub fn parse(input: &str) -> Result<Recipient, RecipientError> {
        let s = input.trim();
        if !is_e164_shape(s) {
            return Err(RecipientError::NotE164);
        }
        let number = phonenumber::parse(None, s).map_err(|_| RecipientError::NotValid)?;
        // libphonenumber's is_valid is "the number type is known": ask for
        // the type once instead of walking the patterns twice.
        let line_type = match number.number_type(&DATABASE) {
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
        let calling_code = number.code().value();
        let region = number
            .metadata(&DATABASE)
            .and_then(|m| m.id().parse::<phonenumber::country::Id>().ok());
        Ok(Recipient {
            e164: s.to_owned(),
            calling_code,
            region,
            line_type,
        })
    }

    /// The number in E.164 form, for the provider. Never log this.
    pub fn e164(&self) -> &str {
        &self.e164
    }

    /// The country calling code (`1`, `49`): a bounded set, safe for metrics.
    pub fn calling_code(&self) -> u16 {
        self.calling_code
    }

    /// ISO 3166 region code, when libphonenumber knows it.
    pub fn region(&self) -> Option<&str> {
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

/// What libphonenumber said about a number, kept by a keyed hash of the
/// number (never the number itself) so that repeats (Kratos's retries, an
/// abusive burst against one number) skip the numbering-plan match, which
/// costs more than everything else on the refusal path.
pub struct RecipientCache {
    hasher: std::collections::hash_map::RandomState,
    map: std::sync::Mutex<std::collections::HashMap<u64, Result<Facts, RecipientError>>>,
    max: usize,
}

#[derive(Debug, Clone, Copy)]
struct Facts {
    calling_code: u16,
    region: Option<phonenumber::country::Id>,
    line_type: LineType,
}

impl RecipientCache {
    pub fn new(max: usize) -> Self {
        RecipientCache {
            hasher: Default::default(),
            map: Default::default(),
            max: max.max(1),
        }
    }

    /// [`Recipient::parse`], remembering the verdict for the number.
    pub fn parse(&self, input: &str) -> Result<Recipient, RecipientError> {
        use std::hash::BuildHasher;
        let s = input.trim();
        if !is_e164_shape(s) {
            return Err(RecipientError::NotE164);
        }
        let key = self.hasher.hash_one(s);
        let cached = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .copied();
        let facts = match cached {
            Some(f) => f,
            None => {
                let f = Recipient::parse(s).map(|r| Facts {
                    calling_code: r.calling_code,
                    region: r.region,
                    line_type: r.line_type,
                });
                let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
                if map.len() >= self.max {
                    // Crude but bounded: start over rather than track age.
                    map.clear();
                }
                map.insert(key, f);
                f
            }
        }?;
        Ok(Recipient {
            e164: s.to_owned(),
            calling_code: facts.calling_code,
            region: facts.region,
            line_type: facts.line_type,
        })
    }
}

/// `+` then 2 to 15 ASCII digits, the first not zero: E.164's form, without
/// asking libphonenumber whether the number exists.
pub fn is_e164_shape(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|digits| {
        (2..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    })
}

/// Load libphonenumber's metadata (it compiles every region's patterns on
/// first use, a few hundred milliseconds). Called in the background at
/// start so the first request does not pay for it.
pub fn warm_up() {
    let _ = Recipient::parse("+14155550123");
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
    fn the_cache_gives_the_same_answers() {
        let cache = RecipientCache::new(2);
        for _ in 0..3 {
            for n in [
                "+14155550123",
                " +4915123456789 ",
                "+99912345678",
                "123",
                "+449012345678",
            ] {
                let direct = Recipient::parse(n);
                let cached = cache.parse(n);
                assert_eq!(
                    direct.clone().map(|r| r.e164().to_owned()),
                    cached.clone().map(|r| r.e164().to_owned()),
                    "{n}"
                );
                assert_eq!(
                    direct.clone().map(|r| (r.calling_code(), r.line_type())),
                    cached.map(|r| (r.calling_code(), r.line_type())),
                    "{n}"
                );
            }
        }
    }

    #[test]
    fn debug_is_masked() {
        let r = Recipient::parse("+14155550123").unwrap();
        assert!(!format!("{r:?}").contains("4155550123"));
    }
}
