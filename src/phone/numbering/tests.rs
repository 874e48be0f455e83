//! [`NumberingPlan`] against the `phonenumber` crate's own answers, and the
//! plan's ownership: what it compiles, that it stays within the database,
//! that two plans share nothing.

use super::*;

/// What a plan holds, counted; tests only (here, where the fields are
/// visible, and in the verdict cache's tests).
impl NumberingPlan {
    /// Pattern slots filled so far (compiled, or found not to compile).
    pub(in crate::phone) fn compiled_patterns(&self) -> usize {
        self.regions()
            .flat_map(Region::patterns)
            .filter(|p| p.compiled.get().is_some())
            .count()
    }

    /// Pattern slots of the calling codes loaded so far.
    pub(in crate::phone) fn pattern_slots(&self) -> usize {
        self.regions().flat_map(Region::patterns).count()
    }

    fn regions(&self) -> impl Iterator<Item = &Region> {
        self.codes
            .iter()
            .filter_map(OnceLock::get)
            .flat_map(|code| code.regions.iter())
    }
}

impl Region {
    fn patterns(&self) -> impl Iterator<Item = &Pattern> {
        self.leading_digits
            .iter()
            .chain(std::iter::once(&self.general))
            .chain(self.special.iter().filter_map(|(p, _)| p.as_ref()))
            .chain(self.fixed_line.iter())
            .chain(self.mobile.iter())
    }
}

/// The crate's own answer: region id and line type, as
/// `PhoneNumber::metadata` and `PhoneNumber::number_type` give them, for
/// numbers without a leading zero (those two drop it, see
/// `Recipient::parse_with`); for the others, validity as `is_valid`
/// gives it, which keeps the zero.
fn crate_answer(e164: &str) -> Option<(String, Type)> {
    let number = phonenumber::parse(None, e164).ok()?;
    if number.national().to_string() != number.national().value().to_string() {
        return Some((String::new(), valid_or_unknown(number.is_valid())));
    }
    let meta = number.metadata(&DATABASE)?;
    Some((meta.id().to_owned(), number.number_type(&DATABASE)))
}

fn valid_or_unknown(valid: bool) -> Type {
    if valid {
        Type::FixedLine // stands for "some known type"
    } else {
        Type::Unknown
    }
}

fn our_answer(plan: &NumberingPlan, e164: &str) -> Option<(String, Type)> {
    let number = plan.parse_e164(e164)?;
    let theirs = phonenumber::parse(None, e164).ok()?;
    assert_eq!(number.code().value(), theirs.code().value(), "{e164}");
    assert_eq!(number.national(), theirs.national(), "{e164}");
    let national = number.national().to_string();
    let answer = plan.classify(number.code().value(), &national);
    if national != number.national().value().to_string() {
        let valid = answer.is_some_and(|(_, kind)| kind != Type::Unknown);
        return Some((String::new(), valid_or_unknown(valid)));
    }
    let (region, kind) = answer?;
    // The crate names non-geographic entities "001"; they have no id.
    let id = region
        .id()
        .map_or_else(|| "001".to_owned(), |id| id.as_ref().to_owned());
    Some((id, kind))
}

/// Every example number of every region, as `+code example`.
fn every_example_number() -> Vec<String> {
    let mut numbers = Vec::new();
    for code in 1..CALLING_CODES {
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
            numbers.extend(
                descriptors
                    .into_iter()
                    .flatten()
                    .filter_map(|d| d.example())
                    .map(|example| format!("+{code}{example}")),
            );
        }
    }
    numbers
}

#[test]
fn classify_agrees_with_the_crate_on_every_example_number() {
    let plan = NumberingPlan::new();
    plan.warm_up();
    let numbers = every_example_number();
    for e164 in &numbers {
        assert_eq!(our_answer(&plan, e164), crate_answer(e164), "{e164}");
    }
    assert!(
        numbers.len() > 1000,
        "only {} example numbers",
        numbers.len()
    );

    // The sweep reached every region: what it compiled is all a plan
    // ever compiles, and a second sweep compiles nothing more.
    let compiled = plan.compiled_patterns();
    assert!(compiled <= plan.pattern_slots());
    assert!(plan.pattern_slots() <= PATTERNS_IN_DATABASE);
    for e164 in &numbers {
        let _ = our_answer(&plan, e164);
    }
    assert_eq!(plan.compiled_patterns(), compiled);
}

#[test]
fn classify_agrees_with_the_crate_on_random_numbers() {
    let plan = NumberingPlan::new();
    plan.warm_up();
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
    // crate's own pattern cache (bounded, Unicode, used for its
    // answers) is not cycled through every region.
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
        assert_eq!(our_answer(&plan, &e164), theirs, "{e164}");
        total += 1;
        if theirs.is_some_and(|(_, t)| t != Type::Unknown) {
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
    let plan = NumberingPlan::new();
    for e164 in ["+114155550123", "+4407400123456", "+7 89123456789"] {
        assert_eq!(our_answer(&plan, e164), crate_answer(e164), "{e164}");
    }
}

#[test]
fn the_database_holds_the_documented_number_of_patterns() {
    // PATTERNS_IN_DATABASE documents the most one plan compiles: keep it
    // true when the phonenumber crate (and its metadata) is upgraded.
    let plan = NumberingPlan::new();
    for code in 1..CALLING_CODES {
        let _ = plan.calling_code(code);
    }
    assert_eq!(plan.pattern_slots(), PATTERNS_IN_DATABASE);
    assert_eq!(plan.compiled_patterns(), 0, "loading compiles nothing");
}

#[test]
fn every_pattern_compiles_for_ascii() {
    // Otherwise it falls back to Unicode classes, at ten times the
    // memory: the bound in the module documentation assumes none do.
    let plan = NumberingPlan::new();
    for code in 1..CALLING_CODES {
        let _ = plan.calling_code(code);
    }
    for pattern in plan.regions().flat_map(Region::patterns) {
        let anchored = format!("^(?:{}\n)", pattern.source);
        regex::RegexBuilder::new(&anchored)
            .ignore_whitespace(true)
            .unicode(false)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn two_plans_share_nothing() {
    let (a, b) = (NumberingPlan::new(), NumberingPlan::new());
    assert!(a.classify(1, "4155550123").is_some());
    let compiled = a.compiled_patterns();
    assert!(compiled > 0);
    assert_eq!(b.pattern_slots(), 0, "b loaded nothing");
    assert_eq!(b.compiled_patterns(), 0, "b compiled nothing");
    assert!(b.classify(1, "4155550123").is_some());
    assert_eq!(b.compiled_patterns(), compiled, "b compiled its own");
    // Asking again compiles nothing new in either.
    assert!(a.classify(1, "4155550124").is_some());
    assert_eq!(a.compiled_patterns(), compiled);
}

#[test]
fn only_the_regions_reached_are_loaded() {
    let plan = NumberingPlan::new();
    let (region, kind) = plan.classify(49, "15123456789").unwrap();
    assert_eq!(region.id(), Some(country::Id::DE));
    assert_eq!(kind, Type::Mobile);
    // +49 is one region: its slots and nothing else's.
    let de = DATABASE.by_id("DE").unwrap();
    assert_eq!(plan.pattern_slots(), Region::new(de).patterns().count());
    assert!(plan.compiled_patterns() < plan.pattern_slots());
}

#[test]
fn reads_as_answers_as_the_formatted_string_would() {
    for digits in [
        "14155550123",
        "4407400123456",
        "390212345678",
        "0",
        "01",
        "+1",
        "1",
        "",
        "12",
    ] {
        for code in [0u16, 1, 39, 44, 440, 999] {
            for national in [
                "",
                "2",
                "4155550123",
                "07400123456",
                "0212345678",
                "7400123456",
            ] {
                assert_eq!(
                    reads_as(digits, code, national),
                    format!("{code}{national}") == digits,
                    "{digits:?} {code} {national:?}"
                );
            }
        }
    }
}
