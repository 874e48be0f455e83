//! libphonenumber's numbering plan, indexed by calling code, with the
//! patterns that decide a number's region and line type compiled by the
//! [`NumberingPlan`] that owns them.
//!
//! # Why not the crate's own matching
//!
//! The `phonenumber` crate looks every pattern up by its text, on every
//! match, in one LRU cache behind a process-wide mutex. Hashing pattern texts
//! of hundreds of characters was the largest single cost of an accepted send,
//! and answering "valid?", "which type?" and "which region?" walked the
//! patterns three times. Here one walk answers all three, with each pattern
//! compiled once (344k → 192k instructions per accepted SMS over the
//! changes that introduced this; see `bench/notes.md`).
//!
//! # Design
//!
//! - A plan is an array with one slot per calling code (1 to 3 digits, so
//!   1000 slots), each filled on first use with that code's regions in
//!   libphonenumber's order. A region holds its pattern slots: general,
//!   the eight special types, fixed line, mobile, and the leading digits
//!   that tell regions of a shared code apart. Everything is found by
//!   index; nothing is keyed by an address or hashed.
//! - Each pattern is compiled the first time a number reaches it
//!   ([`OnceLock`]) and then read without a lock. A slot is never emptied:
//!   the set is bounded by the database (`PATTERNS_IN_DATABASE` patterns
//!   over every region), not by traffic.
//! - Patterns are compiled for ASCII (`\d` is `[0-9]`): a national number
//!   is ASCII digits by the time it gets here, so the answers are the same,
//!   and a compiled pattern takes about 11 KB instead of about 100 KB with
//!   Unicode classes (measured, each pattern matched once). Every region's
//!   patterns compiled take about 16 MB, plus the scratch space `regex`
//!   keeps for each thread that matches a pattern; that is why nothing is
//!   evicted (the process-wide map this replaces needed an eviction bound
//!   of 384 patterns, and a test sweeping every region still peaked at
//!   86 MB; it peaks at 57 MB now, most of it the crate's own answers the
//!   test compares with).
//! - A plan is cheap to create: it touches no metadata until asked. The
//!   service builds one ([`crate::delivery::courier::Courier`] does) and
//!   shares it by `Arc`; [`NumberingPlan::warm_up`] runs in the background
//!   at start so the first request pays neither for libphonenumber's
//!   database nor for the +1 patterns. Another calling code's first number
//!   pays for loading its entry and compiling the patterns it reaches, once
//!   per process (measured in a release build: 0.7 ms for the first +49
//!   number, 8 µs for the next).
//! - Two plans share nothing: no statics, no global cache of our own. The
//!   crate's own cache (still used by its parser) is only sized here.
//!
//! Tests (in `numbering/tests.rs`) keep the plan's answers equal to the
//! crate's for every example number of every region, for random numbers
//! and for national prefixes written after the calling code.

use std::sync::OnceLock;

use phonenumber::metadata::{Descriptor, DATABASE};
use phonenumber::{country, Metadata, PhoneNumber, Type};

/// Calling codes are 1 to 3 digits (ITU-T E.164), so a plan has a slot for
/// each number below this.
const CALLING_CODES: u16 = 1000;

/// How many compiled patterns the `phonenumber` crate may keep in its own
/// process-wide cache (its default is 100). Its parser still uses that cache
/// for its parsing patterns, a few per region; the line-type and
/// leading-digits patterns are compiled by the plan instead.
const CRATE_REGEX_CACHE_CAPACITY: usize = 200;

/// Pattern slots over every calling code's regions in the database this
/// crate is built with (libphonenumber 9.0.33, through `phonenumber`
/// 0.3.10), kept true by a test: the most patterns one plan ever compiles.
#[cfg(test)]
pub(crate) const PATTERNS_IN_DATABASE: usize = 1434;

/// The numbering plan with its patterns compiled on first use. See the
/// module documentation for why it exists and what it costs.
///
/// Contract: for a number in E.164 form, its answers are libphonenumber's
/// (as the `phonenumber` crate gives them); it never holds a phone number.
pub struct NumberingPlan {
    /// Indexed by calling code; filled on first use.
    codes: Box<[OnceLock<CallingCode>]>,
}

/// What the plan knows of one calling code.
struct CallingCode {
    /// libphonenumber knows the code (what its parser tests when it reads
    /// the code off the front of a number).
    known: bool,
    /// The code's main region, told to the parser (see
    /// [`NumberingPlan::parse_e164`]); `None` for non-geographic codes.
    main_region: Option<country::Id>,
    /// One region: its line type decides, whatever it is. Several: the walk
    /// of [`NumberingPlan::classify`].
    single: bool,
    /// libphonenumber's order: the main region first.
    regions: Box<[Region]>,
}

/// One region: its id and its pattern slots.
pub(super) struct Region {
    /// The ISO 3166 id, when the crate knows it (not for `001`, the
    /// non-geographic entities).
    id: Option<country::Id>,
    leading_digits: Option<Pattern>,
    general: Pattern,
    /// Tried in this order, before fixed line and mobile: libphonenumber's.
    special: [(Option<Pattern>, Type); 8],
    fixed_line: Option<Pattern>,
    mobile: Option<Pattern>,
    /// The fixed-line and mobile patterns are the same text: a match of one
    /// is `FixedLineOrMobile`.
    fixed_line_is_mobile: bool,
}

/// A pattern of the metadata, compiled on first use.
struct Pattern {
    /// Possible lengths of a national number; empty means any.
    lengths: &'static [u16],
    source: &'static str,
    compiled: OnceLock<Option<regex::Regex>>,
}

impl NumberingPlan {
    /// An empty plan: 1000 empty slots, no metadata read, nothing compiled.
    pub fn new() -> Self {
        NumberingPlan {
            codes: (0..CALLING_CODES).map(|_| OnceLock::new()).collect(),
        }
    }
}

impl Default for NumberingPlan {
    fn default() -> Self {
        Self::new()
    }
}

impl NumberingPlan {
    /// Load libphonenumber's database (some 100 ms, once per process) and
    /// compile what a +1 number needs, so that the first request pays for
    /// neither. Blocking: run it off the async workers (`spawn_blocking`).
    /// Also sizes the crate's own pattern cache; calling it again is
    /// harmless.
    pub(crate) fn warm_up(&self) {
        // phonenumber keeps its compiled parsing patterns in one
        // process-wide LRU cache of 100: traffic to many countries would
        // recompile regular expressions (a millisecond each) on every
        // request. Entries are compiled on first use only.
        DATABASE
            .cache()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_capacity(CRATE_REGEX_CACHE_CAPACITY);
        // The plan's two steps of a parse (`Recipient::parse_with`), once.
        if let Some(number) = self.parse_e164("+14155550123") {
            let _ = self.classify(number.code().value(), &number.national().to_string());
        }
    }

    fn calling_code(&self, code: u16) -> Option<&CallingCode> {
        let slot = self.codes.get(usize::from(code))?;
        Some(slot.get_or_init(|| CallingCode::load(code)))
    }

    /// `phonenumber::parse(None, e164)` for a number already in E.164 form,
    /// told the main region of its calling code.
    ///
    /// Without a region the crate walks the numbering plan once more to find
    /// the region whose national-prefix rules to apply (for +1, up to 25
    /// regions). With the main region named it does not, and when the number
    /// comes out as written (no national prefix read after the calling code,
    /// the usual case) the region's rules did not matter; otherwise the crate
    /// parses it again its own way. The calling code is found as the crate
    /// finds it: the shortest prefix of 1 to 3 digits that is a known code.
    /// A test keeps the result equal to the crate's.
    pub(super) fn parse_e164(&self, e164: &str) -> Option<PhoneNumber> {
        let digits = e164.strip_prefix('+')?;
        let main_region = (1..=3.min(digits.len()))
            .filter_map(|len| digits.get(..len)?.parse::<u16>().ok())
            .filter_map(|code| self.calling_code(code))
            .find(|code| code.known)
            .and_then(|code| code.main_region);
        if let Some(region) = main_region {
            if let Ok(number) = phonenumber::parse_with(&DATABASE, Some(region), e164) {
                // Taken as written: nothing was read as a national prefix.
                // Had something been, the region chosen could matter: ask
                // the crate.
                if reads_as(
                    digits,
                    number.code().value(),
                    &number.national().to_string(),
                ) {
                    return Some(number);
                }
            }
        }
        // Non-geographic codes (+800, +882, ...) and national prefixes after
        // the calling code: the crate's own way.
        phonenumber::parse(None, e164).ok()
    }

    /// The region and the line type of a national number (with the leading
    /// zero the country keeps, if any), in one walk of the numbering plan.
    ///
    /// This is what `PhoneNumber::number_type` and `PhoneNumber::metadata` of
    /// the `phonenumber` crate answer together (its private
    /// `validator::source_for` and `validator::number_type`), rule for rule.
    /// `national` must be ASCII digits (the patterns are compiled for
    /// ASCII). `None` when no region of the code claims the number; a region
    /// with [`Type::Unknown`] when the code's only region does not know it.
    pub(super) fn classify(&self, code: u16, national: &str) -> Option<(&Region, Type)> {
        let code = self.calling_code(code)?;
        if code.single {
            let [only] = &*code.regions else {
                return None;
            };
            return Some((only, only.number_type(national)));
        }
        for region in code.regions.iter() {
            match &region.leading_digits {
                Some(pattern) => {
                    if pattern.matches(national) {
                        return Some((region, region.number_type(national)));
                    }
                }
                None => {
                    let kind = region.number_type(national);
                    if kind != Type::Unknown {
                        return Some((region, kind));
                    }
                }
            }
        }
        None
    }
}

impl CallingCode {
    /// Read one calling code's entry out of libphonenumber's database, as
    /// the crate's lookups (`Database::region`, `by_code`, `by_id`) give it.
    fn load(code: u16) -> CallingCode {
        let ids = DATABASE.region(&code).unwrap_or_default();
        let known = DATABASE.by_code(&code).is_some();
        let main_region = ids.first().and_then(|id| id.parse::<country::Id>().ok());
        let (single, metas): (bool, Vec<&'static Metadata>) = match ids.as_slice() {
            [only] => {
                let meta = if *only == "001" {
                    // Several non-geographic entities share the id "001":
                    // the code tells them apart.
                    DATABASE
                        .by_code(&code)
                        .and_then(|metas| metas.into_iter().next())
                } else if only.parse::<country::Id>().is_ok() {
                    // The crate requires the id to name a region it knows.
                    DATABASE.by_id(*only)
                } else {
                    None
                };
                (true, meta.into_iter().collect())
            }
            // The crate's walk stops at a region it cannot find: so does
            // the list.
            shared => (
                false,
                shared.iter().map_while(|id| DATABASE.by_id(*id)).collect(),
            ),
        };
        CallingCode {
            known,
            main_region,
            single,
            regions: metas.into_iter().map(Region::new).collect(),
        }
    }
}

impl Region {
    fn new(meta: &'static Metadata) -> Region {
        let d = meta.descriptors();
        let pattern = |desc: Option<&'static Descriptor>| desc.map(Pattern::of);
        Region {
            id: meta.id().parse::<country::Id>().ok(),
            leading_digits: meta.leading_digits().map(|re| Pattern {
                lengths: &[],
                source: re.as_str(),
                compiled: OnceLock::new(),
            }),
            general: Pattern::of(d.general()),
            special: [
                (pattern(d.premium_rate()), Type::PremiumRate),
                (pattern(d.toll_free()), Type::TollFree),
                (pattern(d.shared_cost()), Type::SharedCost),
                (pattern(d.voip()), Type::Voip),
                (pattern(d.personal_number()), Type::PersonalNumber),
                (pattern(d.pager()), Type::Pager),
                (pattern(d.uan()), Type::Uan),
                (pattern(d.voicemail()), Type::Voicemail),
            ],
            fixed_line: pattern(d.fixed_line()),
            mobile: pattern(d.mobile()),
            fixed_line_is_mobile: d.fixed_line().map(|f| f.national_number().as_str())
                == d.mobile().map(|m| m.national_number().as_str()),
        }
    }

    /// The ISO 3166 region, when it is one.
    pub(super) fn id(&self) -> Option<country::Id> {
        self.id
    }

    /// libphonenumber's line type of `national` in this region (the
    /// `phonenumber` crate's private `validator::number_type`, rule for
    /// rule).
    fn number_type(&self, national: &str) -> Type {
        let matches = |p: &Option<Pattern>| p.as_ref().is_some_and(|p| p.matches(national));
        if !self.general.matches(national) {
            return Type::Unknown;
        }
        for (pattern, kind) in &self.special {
            if matches(pattern) {
                return *kind;
            }
        }
        if matches(&self.fixed_line) {
            if self.fixed_line_is_mobile || matches(&self.mobile) {
                return Type::FixedLineOrMobile;
            }
            return Type::FixedLine;
        }
        if matches(&self.mobile) {
            return Type::Mobile;
        }
        Type::Unknown
    }
}

impl Pattern {
    fn of(desc: &'static Descriptor) -> Pattern {
        Pattern {
            lengths: desc.possible_length(),
            source: desc.national_number().as_str(),
            compiled: OnceLock::new(),
        }
    }

    /// `Descriptor::is_match` of the `phonenumber` crate: the length is one
    /// of the possible lengths (when there are any), and the pattern matches
    /// starting at the first digit.
    fn matches(&self, national: &str) -> bool {
        if !self.lengths.is_empty() && !self.lengths.contains(&(national.len() as u16)) {
            return false;
        }
        self.compiled
            .get_or_init(|| compile(self.source))
            .as_ref()
            .is_some_and(|re| re.is_match(national))
    }
}

/// A metadata pattern anchored at the start (the crate asks for a match
/// that starts there; with leftmost-first matching that is the same as
/// anchoring), with white space ignored as the crate reads it, and the
/// trailing newline ending a possible `#` comment.
///
/// ASCII first (the reason is in the module documentation); a pattern that
/// would not compile that way is compiled as the crate compiles it. One that
/// does not compile at all matches nothing (the crate would fail to load it
/// in the first place).
/// Whether `digits` is `code` in decimal followed by `national`: the same
/// answer as `format!("{code}{national}") == digits`, without building the
/// string (a parse asks it once or twice).
pub(super) fn reads_as(digits: &str, code: u16, national: &str) -> bool {
    digits.strip_suffix(national).is_some_and(|prefix| {
        // u16's parse also takes a '+' and leading zeros; decimal does not.
        !prefix.starts_with('+')
            && (prefix.len() == 1 || !prefix.starts_with('0'))
            && prefix.parse::<u16>() == Ok(code)
    })
}

fn compile(source: &str) -> Option<regex::Regex> {
    let anchored = format!("^(?:{source}\n)");
    let build = |unicode: bool| {
        regex::RegexBuilder::new(&anchored)
            .ignore_whitespace(true)
            .unicode(unicode)
            .build()
    };
    build(false).or_else(|_| build(true)).ok()
}

// The equivalence tests against the crate, and those of the plan's
// ownership, are longer than the plan: they live in their own file.
#[cfg(test)]
mod tests;
