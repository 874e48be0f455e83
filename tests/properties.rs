//! Property tests of the request-to-provider path, through the library's
//! public API: parsing never panics, recipients are strictly E.164 and
//! masked in logs, and the TwiML for a call has exactly the intended shape
//! and text whatever strings it is built from.

use std::borrow::Cow;

use kratos_phone_courier::delivery::message::{MessageParser, ParseError};
use kratos_phone_courier::phone::Recipient;
use kratos_phone_courier::provider::twiml::{code_twiml, escape_xml, Speech};
use proptest::prelude::*;
use quick_xml::events::Event;
use quick_xml::Reader;
use serde_json::{json, Value};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn parser() -> &'static MessageParser {
    static P: std::sync::OnceLock<MessageParser> = std::sync::OnceLock::new();
    P.get_or_init(MessageParser::new)
}

fn chars(min: usize, max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), min..=max).prop_map(String::from_iter)
}

/// Arbitrary text, biased towards what breaks XML and E.164 checks.
fn nasty_text() -> impl Strategy<Value = String> {
    prop_oneof![
        chars(0, 40),
        "[<>&\"' :;\\]\\[!\\-?/=a-z0-9\\x00-\\x1F\\x7F\\x{85}\\x{A0}\\x{200B}\\x{202E}\\x{FEFF}\\x{FFFE}\\x{FFFF}]{0,40}",
        Just("]]>".to_owned()),
        Just("\"><Dial>+19005550000</Dial><Say x=\"".to_owned()),
        Just("<![CDATA[<Play>x</Play>]]>".to_owned()),
        Just("&amp;&#x3C;&lt;&#60;".to_owned()),
    ]
}

// ---------------------------------------------------------------------------
// Recipients
// ---------------------------------------------------------------------------

fn recipient_like() -> impl Strategy<Value = String> {
    prop_oneof![
        chars(0, 24),
        "[ \\t\\n+0-9]{0,20}",
        "\\s{0,2}\\+[0-9]{0,17}\\s{0,2}",
        "[+]?[0-9０-９٠-٩\\x{200B}\\x{200E}\\x{202E}\\x{FEFF}\\x{A0}\\x{3000} ()\\-.]{0,20}",
        valid_looking(),
    ]
}

/// Numbers of the shape of real ones in a few numbering plans.
fn valid_looking() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\+1[2-9][0-9]{2}[2-9][0-9]{6}",
        "\\+447[0-9]{9}",
        "\\+4915[0-9]{9}",
        "\\+33[67][0-9]{8}",
        "\\+8190[0-9]{8}",
        "\\+[1-9][0-9]{1,14}",
    ]
}

fn is_strict_e164(s: &str) -> bool {
    let Some(d) = s.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
}

fn check_recipient(input: &str) -> Result<(), TestCaseError> {
    let Ok(r) = Recipient::parse(input) else {
        return Ok(());
    };
    let trimmed = input.trim();
    prop_assert!(is_strict_e164(trimmed), "accepted {input:?}");
    let digits = &r.e164()[1..];
    let cc = r.calling_code().to_string();
    prop_assert!(digits.starts_with(&cc));
    if r.e164() != trimmed {
        // Only a trunk prefix after the calling code may have been dropped
        // (+44 0 7400... is +44 7400...), and the canonical form is stable.
        let national = &digits[cc.len()..];
        prop_assert!(
            trimmed.starts_with(&format!("+{cc}"))
                && trimmed.len() > r.e164().len()
                && trimmed.ends_with(national),
            "{input:?} became {}",
            r.e164()
        );
        let again = Recipient::parse(r.e164()).expect("the canonical form parses");
        prop_assert_eq!(again.e164(), r.e164());
    }
    let masked = r.masked();
    prop_assert_eq!(
        &masked,
        &format!("+{cc}…{}", &digits[digits.len() - 2..]),
        "masked form of {:?}",
        input
    );
    let shown = masked.chars().filter(char::is_ascii_digit).count();
    prop_assert!(shown <= cc.len() + 2, "{masked} shows {shown} digits");
    // Debug is masked too.
    prop_assert_eq!(format!("{r:?}"), format!("Recipient({masked})"));
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn recipient_parse_accepts_only_strict_e164(input in recipient_like()) {
        check_recipient(&input)?;
    }

    #[test]
    fn valid_looking_numbers_are_masked(input in valid_looking()) {
        check_recipient(&input)?;
    }

    #[test]
    fn recipient_parse_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
        check_recipient(&String::from_utf8_lossy(&bytes))?;
    }
}

#[test]
fn some_valid_looking_numbers_are_accepted() {
    // The properties above check accepted numbers; make sure there are some.
    for n in [
        "+14155550123",
        "+447911123456",
        "+4915123456789",
        "+33612345678",
    ] {
        check_recipient(n).unwrap();
        assert!(Recipient::parse(n).is_ok(), "{n}");
    }
}

#[test]
fn the_valid_looking_strategy_mostly_yields_valid_numbers() {
    // Otherwise the masking property would rarely see an accepted number.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = valid_looking();
    let accepted = (0..300)
        .filter(|_| {
            let n = strategy.new_tree(&mut runner).unwrap().current();
            Recipient::parse(&n).is_ok()
        })
        .count();
    assert!(accepted >= 100, "only {accepted} of 300 accepted");
}

// ---------------------------------------------------------------------------
// Courier messages
// ---------------------------------------------------------------------------

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        chars(0, 20).prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("recipient".to_owned()),
                    Just("body".to_owned()),
                    Just("template_type".to_owned()),
                    Just("template_data".to_owned()),
                    Just("login_code".to_owned()),
                    Just("identity".to_owned()),
                    Just("traits".to_owned()),
                    Just("transient_payload".to_owned()),
                    Just("phone_courier".to_owned()),
                    Just("channel".to_owned()),
                    Just("request_headers".to_owned()),
                    Just("expires_in_minutes".to_owned()),
                    chars(0, 8),
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn template_type() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("login_code_valid".to_owned()),
        Just("registration_code_valid".to_owned()),
        Just("verification_code_valid".to_owned()),
        Just("recovery_code_valid".to_owned()),
        "[a-z0-9_]{1,64}",
    ]
}

fn fixtures() -> Vec<Vec<u8>> {
    ["login", "registration", "verification", "recovery"]
        .iter()
        .map(|n| {
            std::fs::read(format!(
                "{}/tests/fixtures/kratos/{n}.json",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap()
        })
        .collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn message_parse_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = parser().parse(&bytes);
    }

    #[test]
    fn message_parse_never_panics_on_json(value in json_value()) {
        let _ = parser().parse(&serde_json::to_vec(&value).unwrap());
    }

    /// Kratos's real payloads with bytes changed, inserted or removed.
    #[test]
    fn message_parse_never_panics_on_mutated_fixtures(
        which in 0usize..4,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let mut bytes = fixtures().swap_remove(which);
        for (at, byte, op) in edits {
            if bytes.is_empty() { break; }
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => { bytes.remove(i); }
            }
        }
        if let Ok(m) = parser().parse(&bytes) {
            // Whatever parsed, the recipient is still unchecked text; the
            // next step must not panic on it either.
            let _ = Recipient::parse(&m.recipient);
        }
    }

    /// Any message the schema admits parses, and recipient and body come
    /// through unchanged, whatever characters they hold.
    #[test]
    fn schema_shaped_messages_parse_and_keep_their_text(
        recipient in chars(1, 64),
        body in chars(0, 300),
        template in template_type(),
        code in prop::option::of(chars(0, 64)),
        // The schema bounds the lifetime to what JSON numbers carry exactly (±2^53 - 1).
        expires in prop::option::of(-9_007_199_254_740_991i64..=9_007_199_254_740_991i64),
    ) {
        let mut m = json!({"recipient": recipient, "body": body, "template_type": template});
        if let Some(c) = &code {
            m["template_data"] = json!({"login_code": c, "registration_code": c, "verification_code": c});
        }
        if let Some(e) = expires {
            if m["template_data"].is_null() { m["template_data"] = json!({}); }
            m["template_data"]["expires_in_minutes"] = json!(e);
        }
        let parsed = parser().parse(&serde_json::to_vec(&m).unwrap());
        let parsed = match parsed {
            Ok(p) => p,
            Err(ParseError::MalformedJson) => return Err(TestCaseError::fail("malformed")),
            Err(ParseError::Schema(v)) => return Err(TestCaseError::fail(format!("{v:?}"))),
        };
        prop_assert_eq!(parsed.recipient, recipient);
        prop_assert_eq!(parsed.body, body);
        prop_assert_eq!(parsed.expires_in_minutes, expires);
        let is_code_template = template.ends_with("_code_valid")
            && ["login", "registration", "verification", "recovery"]
                .iter()
                .any(|t| template == format!("{t}_code_valid"));
        if is_code_template {
            prop_assert_eq!(parsed.code, code);
        }
    }
}

// ---------------------------------------------------------------------------
// TwiML
// ---------------------------------------------------------------------------

/// What `escape_xml` keeps: XML 1.0 cannot carry the other control
/// characters, U+FFFE or U+FFFF.
fn xml_legal(s: &str) -> String {
    s.chars()
        .filter(|&c| {
            matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
        })
        .collect()
}

/// XML 1.0 end-of-line handling: what any conforming parser reports for
/// text content (CR LF and lone CR become LF).
fn eol_normalized(s: &str) -> String {
    s.replace("\r\n", "\n").replace('\r', "\n")
}

fn sentence(lead: &str, code: &str) -> String {
    let spaced = code
        .chars()
        .map(String::from)
        .collect::<Vec<_>>()
        .join(", ");
    format!("{}: {spaced}.", lead.trim_end_matches([':', ' ']))
}

#[derive(Debug, PartialEq)]
enum Node {
    Open(String, Vec<(String, String)>),
    Empty(String, Vec<(String, String)>),
    Close(String),
    Text(String),
}

/// Parse with quick-xml into elements and text, references resolved and
/// adjacent text joined. Anything else (comments, CDATA, PIs, DOCTYPE,
/// unknown entities) is an error.
fn parse_xml(doc: &str) -> Result<Vec<Node>, String> {
    let mut reader = Reader::from_str(doc);
    let mut out: Vec<Node> = Vec::new();
    let push_text = |out: &mut Vec<Node>, t: Cow<'_, str>| {
        if let Some(Node::Text(prev)) = out.last_mut() {
            prev.push_str(&t);
        } else {
            out.push(Node::Text(t.into_owned()));
        }
    };
    let attrs = |e: &quick_xml::events::BytesStart<'_>| -> Result<Vec<(String, String)>, String> {
        e.attributes()
            .map(|a| {
                let a = a.map_err(|e| e.to_string())?;
                let v = a.unescape_value().map_err(|e| e.to_string())?;
                Ok((
                    String::from_utf8_lossy(a.key.as_ref()).into_owned(),
                    v.into_owned(),
                ))
            })
            .collect()
    };
    let mut seen_decl = false;
    loop {
        match reader.read_event().map_err(|e| e.to_string())? {
            Event::Decl(_) if out.is_empty() && !seen_decl => seen_decl = true,
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                out.push(Node::Open(name, attrs(&e)?));
            }
            Event::Empty(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                out.push(Node::Empty(name, attrs(&e)?));
            }
            Event::End(e) => {
                out.push(Node::Close(
                    String::from_utf8_lossy(e.name().as_ref()).into_owned(),
                ));
            }
            Event::Text(t) => {
                let t = t.xml10_content().map_err(|e| e.to_string())?;
                push_text(&mut out, t);
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref().map_err(|e| e.to_string())? {
                    Some(c) => c.to_string(),
                    None => {
                        let name = r.decode().map_err(|e| e.to_string())?;
                        match name.as_ref() {
                            "amp" => "&",
                            "lt" => "<",
                            "gt" => ">",
                            "quot" => "\"",
                            "apos" => "'",
                            other => return Err(format!("unknown entity &{other};")),
                        }
                        .to_owned()
                    }
                };
                push_text(&mut out, Cow::Owned(resolved));
            }
            Event::Eof => break,
            other => return Err(format!("unexpected {other:?}")),
        }
    }
    if !seen_decl {
        return Err("no XML declaration".into());
    }
    Ok(out)
}

fn check_twiml(speech: &Speech<'_>, code: &str) -> Result<(), TestCaseError> {
    let doc = code_twiml(speech, code);
    let nodes = parse_xml(&doc).map_err(|e| TestCaseError::fail(format!("{e}: {doc:?}")))?;
    let say_attrs = vec![
        ("voice".to_owned(), xml_legal(speech.voice)),
        ("language".to_owned(), xml_legal(speech.language)),
    ];
    let expected = vec![
        Node::Open("Response".into(), vec![]),
        Node::Open("Say".into(), say_attrs.clone()),
        Node::Text(eol_normalized(&xml_legal(&sentence(speech.intro, code)))),
        Node::Close("Say".into()),
        Node::Empty(
            "Pause".into(),
            vec![("length".into(), speech.pause_seconds.to_string())],
        ),
        Node::Open("Say".into(), say_attrs),
        Node::Text(eol_normalized(&xml_legal(&sentence(speech.again, code)))),
        Node::Close("Say".into()),
        Node::Close("Response".into()),
    ];
    prop_assert_eq!(nodes, expected, "TwiML {:?}", doc);
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Whatever the configured strings, the call is Response, Say, Pause,
    /// Say with only voice/language/length attributes, and each Say speaks
    /// exactly the intended sentence.
    #[test]
    fn twiml_has_exactly_the_intended_shape_and_text(
        voice in nasty_text(),
        language in nasty_text(),
        intro in nasty_text(),
        again in nasty_text(),
        pause in any::<u32>(),
        code in "[A-Za-z0-9]{4,12}",
    ) {
        let speech = Speech { voice: &voice, language: &language, intro: &intro, again: &again, pause_seconds: pause };
        check_twiml(&speech, &code)?;
    }

    /// Even a code that is not speakable (the courier refuses those before
    /// building TwiML) cannot change the document's structure.
    #[test]
    fn twiml_structure_survives_hostile_codes(
        intro in nasty_text(),
        code in nasty_text(),
    ) {
        let speech = Speech { voice: "alice", language: "en-US", intro: &intro, again: "Again", pause_seconds: 1 };
        check_twiml(&speech, &code)?;
    }

    /// `escape_xml` output has no markup characters left and only the five
    /// predefined entities, and unescapes back to the XML-legal input.
    #[test]
    fn escape_xml_is_markup_free_and_reversible(s in nasty_text()) {
        let e = escape_xml(&s);
        prop_assert!(!e.contains(['<', '>', '"', '\'']), "{e:?}");
        let mut rest = e.as_str();
        while let Some(i) = rest.find('&') {
            rest = &rest[i..];
            let ok = ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].iter().any(|p| rest.starts_with(p));
            prop_assert!(ok, "stray & in {e:?}");
            rest = &rest[1..];
        }
        let back = e
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&");
        prop_assert_eq!(back, xml_legal(&s));
    }
}

#[test]
fn twiml_check_catches_injection() {
    // The checker itself must reject what it is there to catch.
    let injected = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Say voice=\"a\" language=\"b\">x</Say><Dial>+1</Dial></Response>";
    let nodes = parse_xml(injected).unwrap();
    assert!(nodes.contains(&Node::Open("Dial".into(), vec![])));
    assert!(parse_xml("<?xml version=\"1.0\"?><Response><!-- c --></Response>").is_err());
}
