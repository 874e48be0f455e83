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
        let number = parse_e164(s).ok_or(RecipientError::NotValid)?;
        let calling_code = number.code().value();
        // The national significant number with its leading zero, where the
        // country keeps one (Italy: +39 02...). The crate's `number_type` and
        // `metadata` drop that zero (and call Italian landlines invalid while
        // its `is_valid` accepts them); `is_valid` and libphonenumber keep it.
        let (meta, kind) = classify(calling_code, &number.national().to_string())
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
        let region = meta.id().parse::<phonenumber::country::Id>().ok();
        // The canonical form, which is the input itself unless a trunk
        // prefix followed the calling code (+44 0 7400...): libphonenumber
        // drops it, and so must every key and the provider, or the same
        // phone would count as two recipients.
        let canonical = format!("+{calling_code}{}", number.national());
        Ok(Recipient {
            e164: if canonical == s {
                s.to_owned()
            } else {
                canonical
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
                let parsed = Recipient::parse(s);
                if let Ok(r) = &parsed {
                    if r.e164 != s {
                        // Not in canonical form: rare, and not remembered,
                        // so a hit can always use the input as it is.
                        return parsed;
                    }
                }
                let f = parsed.map(|r| Facts {
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

/// `phonenumber::parse(None, e164)` for a number already in E.164 form, told
/// the main region of its calling code.
///
/// Without a region the crate walks the numbering plan once more to find the
/// region whose national-prefix rules to apply (for +1, up to 25 regions).
/// With the main region named it does not, and when the number comes out as
/// written (no national prefix read after the calling code, the usual case)
/// the region's rules did not matter; otherwise the crate parses it again
/// its own way. The calling code is found as the crate finds it: the
/// shortest prefix of 1 to 3 digits that is a known code. A test keeps the
/// result equal to the crate's.
fn parse_e164(e164: &str) -> Option<phonenumber::PhoneNumber> {
    let digits = e164.strip_prefix('+')?;
    let main_region = (1..=3.min(digits.len()))
        .filter_map(|len| digits.get(..len)?.parse::<u16>().ok())
        .find(|code| DATABASE.by_code(code).is_some())
        .and_then(|code| DATABASE.region(&code)?.first().copied())
        .and_then(|region| region.parse::<phonenumber::country::Id>().ok());
    if let Some(region) = main_region {
        if let Ok(number) = phonenumber::parse_with(&DATABASE, Some(region), e164) {
            // Taken as written: nothing was read as a national prefix. Had
            // something been, the region chosen could matter: ask the crate.
            if format!("{}{}", number.code().value(), number.national()) == digits {
                return Some(number);
            }
        }
    }
    // Non-geographic codes (+800, +882, ...) and national prefixes after the
    // calling code: the crate's own way.
    phonenumber::parse(None, e164).ok()
}

/// The region's metadata and the line type of a national number, in one walk
/// of the numbering plan.
///
/// This is what `PhoneNumber::number_type` and `PhoneNumber::metadata` of the
/// `phonenumber` crate answer together (its `validator::source_for` and
/// `validator::number_type`, which are private), written with the crate's
/// public metadata API. Asking the crate costs three walks for a number of a
/// shared calling code such as +1: one to find the region for the type, one
/// for the type, one to find the region again; every pattern it matches locks
/// one process-wide regex cache. A test keeps this equal to the crate's
/// answers for every example number in the metadata and for random digits.
fn classify(
    code: u16,
    national: &str,
) -> Option<(&'static phonenumber::Metadata, phonenumber::Type)> {
    let regions = DATABASE.region(&code)?;
    if let [only] = regions.as_slice() {
        let meta = if *only == "001" {
            DATABASE.by_code(&code)?.into_iter().next()?
        } else {
            // The crate requires the id to name a region it knows.
            only.parse::<phonenumber::country::Id>().ok()?;
            DATABASE.by_id(*only)?
        };
        return Some((meta, number_type(meta, national)));
    }
    for region in regions {
        let meta = DATABASE.by_id(region)?;
        match meta.leading_digits() {
            Some(pattern) => {
                if pattern.find(national).is_some_and(|m| m.start() == 0) {
                    return Some((meta, number_type(meta, national)));
                }
            }
            None => {
                let kind = number_type(meta, national);
                if kind != phonenumber::Type::Unknown {
                    return Some((meta, kind));
                }
            }
        }
    }
    None
}

/// libphonenumber's line type of `national` in one region (the `phonenumber`
/// crate's private `validator::number_type`, rule for rule).
fn number_type(meta: &'static phonenumber::Metadata, national: &str) -> phonenumber::Type {
    use phonenumber::Type;
    let d = meta.descriptors();
    let matches = |desc: Option<&'static phonenumber::metadata::Descriptor>| {
        desc.is_some_and(|desc| descriptor_matches(desc, national))
    };
    if !descriptor_matches(d.general(), national) {
        return Type::Unknown;
    }
    for (desc, kind) in [
        (d.premium_rate(), Type::PremiumRate),
        (d.toll_free(), Type::TollFree),
        (d.shared_cost(), Type::SharedCost),
        (d.voip(), Type::Voip),
        (d.personal_number(), Type::PersonalNumber),
        (d.pager(), Type::Pager),
        (d.uan(), Type::Uan),
        (d.voicemail(), Type::Voicemail),
    ] {
        if matches(desc) {
            return kind;
        }
    }
    if matches(d.fixed_line()) {
        let same_pattern = d.fixed_line().map(|f| f.national_number().as_str())
            == d.mobile().map(|m| m.national_number().as_str());
        if same_pattern || matches(d.mobile()) {
            return Type::FixedLineOrMobile;
        }
        return Type::FixedLine;
    }
    if matches(d.mobile()) {
        return Type::Mobile;
    }
    Type::Unknown
}

/// `Descriptor::is_match` of the `phonenumber` crate (the length is one of
/// the possible lengths, and the pattern matches at the start), with the
/// pattern compiled here once.
///
/// The crate looks each pattern up by its text, on every match, in an LRU
/// cache behind one process-wide mutex: hashing pattern texts of hundreds of
/// characters was the largest single cost of an accepted send. Here the key
/// is the descriptor's address in the crate's static database, so the set is
/// bounded by that database and only descriptors of regions actually seen
/// are compiled, at most [`MAX_COMPILED_PATTERNS`] at a time.
fn descriptor_matches(desc: &'static phonenumber::metadata::Descriptor, national: &str) -> bool {
    use std::collections::HashMap;
    use std::sync::{LazyLock, RwLock};
    static COMPILED: LazyLock<RwLock<HashMap<usize, Option<regex::Regex>>>> =
        LazyLock::new(Default::default);

    let lengths = desc.possible_length();
    if !lengths.is_empty() && !lengths.contains(&(national.len() as u16)) {
        return false;
    }
    let key = std::ptr::from_ref(desc) as usize;
    let found =
        |compiled: &Option<regex::Regex>| compiled.as_ref().is_some_and(|re| re.is_match(national));
    if let Some(compiled) = COMPILED.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return found(compiled);
    }
    // Anchored at the start: the crate asks for a match that starts there.
    // A pattern that does not compile matches nothing (the crate would fail
    // to load it in the first place).
    let compiled = regex::RegexBuilder::new(&format!("^(?:{}\n)", desc.national_number().as_str()))
        .ignore_whitespace(true)
        .build()
        .ok();
    let answer = found(&compiled);
    let mut map = COMPILED.write().unwrap_or_else(|p| p.into_inner());
    if map.len() >= MAX_COMPILED_PATTERNS {
        // Numbers from every region at once (an attack, or a test): start
        // over rather than keep every region's patterns compiled.
        map.clear();
    }
    map.insert(key, compiled);
    answer
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
    // phonenumber keeps its compiled parsing patterns in one process-wide
    // LRU cache of 100: traffic to many countries would recompile regular
    // expressions (a millisecond each) on every request. Entries are
    // compiled on first use only.
    DATABASE
        .cache()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .set_capacity(REGEX_CACHE_CAPACITY);
    let _ = Recipient::parse("+14155550123");
}

/// How many compiled patterns phonenumber may keep (its default is 100).
/// After [`descriptor_matches`] took the line-type patterns over, the crate
/// compiles only its parsing patterns, a few per region.
const REGEX_CACHE_CAPACITY: usize = 200;

/// Line-type patterns kept compiled: about a dozen per region, so some 30
/// regions at once. A compiled pattern takes about 70 KB (all regions' would
/// take some 250 MB), which is why this is bounded.
const MAX_COMPILED_PATTERNS: usize = 384;

/// `Debug` is masked too, so `{:?}` in a log or a panic cannot leak a number.
impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recipient({})", self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The crate's own answer: region id and line type, as
    /// `PhoneNumber::metadata` and `PhoneNumber::number_type` give them, for
    /// numbers without a leading zero (those two drop it, see
    /// `Recipient::parse`); for the others, validity as `is_valid` gives it,
    /// which keeps the zero.
    fn crate_answer(e164: &str) -> Option<(String, phonenumber::Type)> {
        let number = phonenumber::parse(None, e164).ok()?;
        if number.national().to_string() != number.national().value().to_string() {
            return Some((String::new(), valid_or_unknown(number.is_valid())));
        }
        let meta = number.metadata(&DATABASE)?;
        Some((meta.id().to_owned(), number.number_type(&DATABASE)))
    }

    fn valid_or_unknown(valid: bool) -> phonenumber::Type {
        if valid {
            phonenumber::Type::FixedLine // stands for "some known type"
        } else {
            phonenumber::Type::Unknown
        }
    }

    fn our_answer(e164: &str) -> Option<(String, phonenumber::Type)> {
        let number = parse_e164(e164)?;
        let theirs = phonenumber::parse(None, e164).ok()?;
        assert_eq!(number.code().value(), theirs.code().value(), "{e164}");
        assert_eq!(number.national(), theirs.national(), "{e164}");
        let national = number.national().to_string();
        let answer = classify(number.code().value(), &national);
        if national != number.national().value().to_string() {
            let valid = answer.is_some_and(|(_, kind)| kind != phonenumber::Type::Unknown);
            return Some((String::new(), valid_or_unknown(valid)));
        }
        let (meta, kind) = answer?;
        Some((meta.id().to_owned(), kind))
    }

    #[test]
    fn classify_agrees_with_the_crate_on_every_example_number() {
        warm_up();
        let mut checked = 0;
        for code in 1..=999u16 {
            for meta in DATABASE.by_code(&code).unwrap_or_default() {
                let d = meta.descriptors();
                let descriptors = [
                    Some(d.general()),
                    d.fixed_line(),
                    d.mobile(),
                    d.toll_free(),
                    d.premium_rate(),
                    d.shared_cost(),
                    d.personal_number(),
                    d.voip(),
                    d.pager(),
                    d.uan(),
                    d.voicemail(),
                ];
                for example in descriptors
                    .into_iter()
                    .flatten()
                    .filter_map(|d| d.example())
                {
                    let e164 = format!("+{code}{example}");
                    assert_eq!(our_answer(&e164), crate_answer(&e164), "{e164}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 1000, "only {checked} example numbers");
    }

    #[test]
    fn classify_agrees_with_the_crate_on_random_numbers() {
        warm_up();
        // xorshift: deterministic, no dependency.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // The example-number test covers every region; here a few dozen
        // calling codes, shared ones (+1, +7, +44) among them, so that the
        // compiled-pattern caches are not cycled through every region.
        let codes: [u16; 24] = [
            1, 7, 27, 31, 33, 34, 39, 41, 44, 46, 48, 49, 52, 55, 61, 81, 82, 86, 90, 91, 234, 380,
            971, 972,
        ];
        let (mut valid, mut total) = (0, 0);
        for _ in 0..3000 {
            let code = codes[(next() % codes.len() as u64) as usize];
            let len = 4 + (next() % 10) as usize;
            let digits: String = (0..len)
                .map(|_| char::from(b'0' + (next() % 10) as u8))
                .collect();
            let e164 = format!("+{code}{digits}");
            let theirs = crate_answer(&e164);
            assert_eq!(our_answer(&e164), theirs, "{e164}");
            total += 1;
            if theirs.is_some_and(|(_, t)| t != phonenumber::Type::Unknown) {
                valid += 1;
            }
        }
        // Both outcomes must be exercised.
        assert!(valid > 100 && valid < total, "{valid} valid of {total}");
    }

    #[test]
    fn a_national_prefix_after_the_calling_code_is_judged_as_the_crate_does() {
        // "+1 1 415...": a trunk prefix where none belongs. The crate refuses
        // it; reading it with US rules alone would accept +14155550123.
        for e164 in ["+114155550123", "+4407400123456", "+7 89123456789"] {
            assert_eq!(our_answer(e164), crate_answer(e164), "{e164}");
        }
        assert_eq!(
            Recipient::parse("+114155550123"),
            Err(RecipientError::NotValid)
        );
    }

    #[test]
    fn a_trunk_prefix_after_the_calling_code_is_dropped() {
        let cache = RecipientCache::new(100);
        for _ in 0..2 {
            // Twice: the second time must not come from a cached verdict
            // with the input string.
            let r = cache.parse("+4407400123456").unwrap();
            assert_eq!(r.e164(), "+447400123456");
            assert_eq!(r.region(), Some("GB"));
        }
        assert_eq!(
            Recipient::parse("+447400123456").unwrap().e164(),
            "+447400123456"
        );
        // Italian numbers keep their leading zero: it is not a trunk prefix.
        assert_eq!(
            Recipient::parse("+390212345678").unwrap().e164(),
            "+390212345678"
        );
    }

    #[test]
    fn shared_calling_codes_find_their_region() {
        for (e164, region) in [
            ("+14155550123", "US"),
            ("+16135550123", "CA"),
            ("+18765550123", "JM"),
            ("+447400123456", "GB"),
            ("+79123456789", "RU"),
            ("+77012345678", "KZ"),
        ] {
            assert_eq!(
                Recipient::parse(e164).unwrap().region(),
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
