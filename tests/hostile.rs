//! Hostile requests: a table of malformed, oversized, ambiguous and
//! malicious requests, each sent as raw bytes to the real server (port 0,
//! wiremock Twilio), with the status and `error.code` it must get.
//!
//! For every case the answer must be JSON (where the service, not the HTTP
//! layer, answers), under the 1024 bytes Kratos reads, must not echo the
//! recipient, the code or the body, and Twilio must receive nothing.
//!
//! Cases whose current answer is wrong are kept, asserting the right
//! documented answer, in `formerly_known_bugs` (fixed since), so the rest
//! of the battery stays green.

#[path = "api/helpers.rs"]
mod helpers;

use std::time::Duration;

use base64::Engine;
use helpers::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The valid recipient and code used around the hostile part of a request:
/// neither may ever appear in an answer.
const NUMBER: &str = "+14155550123";
const CODE: &str = "482917";
const BODY: &str = "Your login code is: 482917";
/// Always looked for in answers: the number's digits, the code, the body.
const ALWAYS_SECRET: &[&str] = &["4155550123", CODE, "login code is"];

// ---------------------------------------------------------------------------
// Requests as raw bytes
// ---------------------------------------------------------------------------

/// How the body is framed on the wire.
#[derive(Clone)]
enum Framing {
    /// `Content-Length` equal to the body's length.
    Exact,
    /// This `Content-Length` value, whatever the body is.
    Declared(String),
    /// `Transfer-Encoding: chunked` in chunks of this size.
    Chunked(usize),
    /// No framing header at all.
    Nothing,
}

#[derive(Clone)]
struct Req {
    method: String,
    target: String,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// Header lines written as they are, after the headers.
    lines: Vec<Vec<u8>>,
    body: Vec<u8>,
    framing: Framing,
}

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn basic(user_pass: &str) -> String {
    format!("Basic {}", b64(user_pass.as_bytes()))
}

fn good_auth() -> String {
    basic(&format!("{KRATOS_USER}:{KRATOS_PASSWORD}"))
}

impl Req {
    /// POST `body` to `path` with Kratos's credentials and JSON content type.
    fn post(path: &str, body: impl Into<Vec<u8>>) -> Req {
        Req {
            method: "POST".into(),
            target: path.into(),
            headers: vec![
                (b"Host".to_vec(), b"courier.test".to_vec()),
                (b"Authorization".to_vec(), good_auth().into_bytes()),
                (b"Content-Type".to_vec(), b"application/json".to_vec()),
            ],
            lines: Vec::new(),
            body: body.into(),
            framing: Framing::Exact,
        }
    }

    fn sms(body: impl Into<Vec<u8>>) -> Req {
        Req::post("/v1/sms", body)
    }

    fn voice(body: impl Into<Vec<u8>>) -> Req {
        Req::post("/v1/voice", body)
    }

    fn sms_json(v: &Value) -> Req {
        Req::sms(v.to_string())
    }

    fn voice_json(v: &Value) -> Req {
        Req::voice(v.to_string())
    }

    fn method(mut self, m: &str) -> Req {
        self.method = m.into();
        self
    }

    fn target(mut self, t: &str) -> Req {
        self.target = t.into();
        self
    }

    /// Remove every header of this name (any case).
    fn without(mut self, name: &str) -> Req {
        self.headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case(name.as_bytes()));
        self
    }

    /// Replace every header of this name with one value.
    fn set(self, name: &str, value: impl Into<Vec<u8>>) -> Req {
        self.without(name).add(name, value)
    }

    /// Append a header (possibly a second one of the same name).
    fn add(mut self, name: &str, value: impl Into<Vec<u8>>) -> Req {
        self.headers.push((name.as_bytes().to_vec(), value.into()));
        self
    }

    /// Append a header line exactly as given (no `: ` added).
    fn add_line(mut self, line: &[u8]) -> Req {
        self.lines.push(line.to_vec());
        self
    }

    fn framing(mut self, f: Framing) -> Req {
        self.framing = f;
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.target).into_bytes();
        for (n, v) in &self.headers {
            out.extend_from_slice(n);
            out.extend_from_slice(b": ");
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
        }
        for line in &self.lines {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
        match &self.framing {
            Framing::Exact => {
                out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes())
            }
            Framing::Declared(v) => {
                out.extend_from_slice(format!("Content-Length: {v}\r\n").as_bytes())
            }
            Framing::Chunked(_) => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
            Framing::Nothing => {}
        }
        out.extend_from_slice(b"Connection: close\r\n\r\n");
        match &self.framing {
            Framing::Chunked(size) => {
                for chunk in self.body.chunks(*size) {
                    out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                    out.extend_from_slice(chunk);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
            }
            Framing::Declared(_) => {}
            _ => out.extend_from_slice(&self.body),
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------

/// A valid SMS message, changed by `f`.
fn msg(f: impl FnOnce(&mut Value)) -> Value {
    let mut m = json!({
        "recipient": NUMBER,
        "body": BODY,
        "template_type": "login_code_valid",
        "template_data": {"login_code": CODE, "expires_in_minutes": 15},
        "message_type": "sms",
        "request_headers": {"Accept-Language": ["en-US"], "True-Client-Ip": ["203.0.113.7"]}
    });
    f(&mut m);
    m
}

fn with_recipient(r: &str) -> Value {
    msg(|m| m["recipient"] = json!(r))
}

fn with_code(c: &str) -> Value {
    msg(|m| m["template_data"]["login_code"] = json!(c))
}

fn with_body(b: &str) -> Value {
    msg(|m| m["body"] = json!(b))
}

/// A valid message whose recipient is refused after the media type, auth
/// and body checks: a 422 `invalid_recipient` proves those checks passed
/// without anything being sent.
fn passes_http_checks() -> Value {
    with_recipient("+1415555O123")
}

/// The raw JSON text of a valid message with `raw` spliced in as the value
/// of `key` (whatever bytes they are).
fn splice(key: &str, raw: &[u8]) -> Vec<u8> {
    let mut out =
        b"{\"body\":\"Your login code is: 482917\",\"template_type\":\"login_code_valid\",\""
            .to_vec();
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    out.extend_from_slice(raw);
    if key != "recipient" {
        out.extend_from_slice(b",\"recipient\":\"+14155550123\"");
    }
    out.extend_from_slice(b"}");
    out
}

// ---------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------

struct Case {
    name: String,
    request: Req,
    status: u16,
    /// `error.code` of a JSON answer; `None` when the HTTP layer answers
    /// (no JSON body is required then).
    code: Option<&'static str>,
    /// Strings the answer must not contain, beyond [`ALWAYS_SECRET`].
    secrets: Vec<String>,
    /// Half-close the connection once the request is written.
    half_close: bool,
}

fn case(name: &str, request: Req, status: u16, code: &'static str) -> Case {
    Case {
        name: name.into(),
        request,
        status,
        code: Some(code),
        secrets: Vec::new(),
        half_close: false,
    }
}

/// The HTTP layer answers: a status, no JSON promised.
fn http_case(name: &str, request: Req, status: u16) -> Case {
    Case {
        code: None,
        ..case(name, request, status, "")
    }
}

impl Case {
    fn secret(mut self, s: &str) -> Case {
        self.secrets.push(s.into());
        self
    }

    fn half_close(mut self) -> Case {
        self.half_close = true;
        self
    }
}

fn nested_arrays(depth: usize) -> Vec<u8> {
    let mut v = vec![b'['; depth];
    v.extend(std::iter::repeat_n(b']', depth));
    v
}

fn nested_objects(depth: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for _ in 0..depth {
        v.extend_from_slice(b"{\"a\":");
    }
    v.extend_from_slice(b"1");
    v.extend(std::iter::repeat_n(b'}', depth));
    v
}

fn malformed_json_cases() -> Vec<Case> {
    const C: &str = "malformed_json";
    let valid = msg(|_| {}).to_string();
    let mut utf16 = vec![0xFF, 0xFE];
    for u in valid.encode_utf16() {
        utf16.extend_from_slice(&u.to_le_bytes());
    }
    let mut bom = "\u{FEFF}".as_bytes().to_vec();
    bom.extend_from_slice(valid.as_bytes());
    let mut identity_deep = b"{\"recipient\":\"+14155550123\",\"body\":\"b\",\"template_type\":\"login_code_valid\",\"template_data\":{\"identity\":".to_vec();
    identity_deep.extend(nested_objects(10_000));
    identity_deep.extend_from_slice(b"}}");
    vec![
        case(
            "invalid UTF-8 in the recipient",
            Req::sms(splice("recipient", b"\"+1415555\xff0123\"")),
            400,
            C,
        ),
        case(
            "overlong UTF-8 encoding of '/' in the body",
            Req::sms(splice("body", b"\"a\xc0\xafb\"")),
            400,
            C,
        ),
        case(
            "UTF-8-encoded surrogate (CESU) in the body",
            Req::sms(splice("body", b"\"a\xed\xa0\x80b\"")),
            400,
            C,
        ),
        case("UTF-16LE with BOM", Req::sms(utf16), 400, C),
        case("UTF-8 BOM before the JSON", Req::sms(bom), 400, C),
        case(
            "lone surrogate escape in the body",
            Req::sms(splice("body", br#""\ud800 code""#)),
            400,
            C,
        ),
        case("empty body", Req::sms(""), 400, C),
        case("truncated object", Req::sms(r#"{"recipient":"#), 400, C),
        case(
            "trailing garbage after the object",
            Req::sms(valid.clone() + " x"),
            400,
            C,
        ),
        case(
            "two objects back to back",
            Req::sms(valid.clone() + &valid),
            400,
            C,
        ),
        case(
            "a comment",
            Req::sms(valid.replacen('{', "{/* hi */", 1)),
            400,
            C,
        ),
        case(
            "single-quoted strings",
            Req::sms(valid.replace('"', "'")),
            400,
            C,
        ),
        case(
            "raw control character in a string",
            Req::sms(splice("body", b"\"a\x00b\"")),
            400,
            C,
        ),
        case("NaN", Req::sms(splice("body", b"NaN")), 400, C),
        case(
            "10 000 nested arrays as the whole body",
            Req::sms(nested_arrays(10_000)),
            400,
            C,
        ),
        case(
            "10 000 nested arrays as the recipient",
            Req::sms(splice("recipient", &nested_arrays(10_000))),
            400,
            C,
        ),
        case(
            "10 000 nested objects as the identity",
            Req::sms(identity_deep),
            400,
            C,
        ),
        case(
            "1e999 as expires_in_minutes",
            Req::sms(
                msg(|_| {})
                    .to_string()
                    .replace("\"expires_in_minutes\":15", "\"expires_in_minutes\":1e999"),
            ),
            400,
            C,
        ),
        case("1e999 as the whole body", Req::sms("1e999"), 400, C),
    ]
}

fn schema_cases() -> Vec<Case> {
    const C: &str = "schema_violation";
    vec![
        case("top-level array", Req::sms("[]"), 400, C),
        case("top-level null", Req::sms("null"), 400, C),
        case("top-level string", Req::sms("\"+14155550123\""), 400, C),
        case("empty object", Req::sms("{}"), 400, C),
        case(
            "null recipient",
            Req::sms_json(&msg(|m| m["recipient"] = Value::Null)),
            400,
            C,
        ),
        case(
            "null body",
            Req::sms_json(&msg(|m| m["body"] = Value::Null)),
            400,
            C,
        ),
        case(
            "null template_type",
            Req::sms_json(&msg(|m| m["template_type"] = Value::Null)),
            400,
            C,
        ),
        case(
            "null login_code",
            Req::voice_json(&msg(|m| m["template_data"]["login_code"] = Value::Null)),
            400,
            C,
        ),
        case(
            "recipient missing",
            Req::sms_json(&msg(|m| {
                m.as_object_mut().unwrap().remove("recipient");
            })),
            400,
            C,
        ),
        case(
            "a list of recipients instead of a string",
            Req::sms_json(&msg(|m| m["recipient"] = json!([NUMBER, "+14155550124"]))),
            400,
            C,
        ),
        case(
            "recipient as a number",
            Req::sms_json(&msg(|m| m["recipient"] = json!(14155550123u64))),
            400,
            C,
        ),
        case(
            "recipient as an object",
            Req::sms_json(&msg(|m| m["recipient"] = json!({"e164": NUMBER}))),
            400,
            C,
        ),
        case(
            "empty recipient",
            Req::sms_json(&with_recipient("")),
            400,
            C,
        ),
        case(
            "recipient of 65 characters",
            Req::sms_json(&with_recipient(&format!("+1{}", "4".repeat(63)))),
            400,
            C,
        ),
        case(
            "body over the schema's 16384 characters",
            Req::sms_json(&with_body(&"x".repeat(16_385))),
            400,
            C,
        ),
        case(
            "template_type with capitals and a space",
            Req::sms_json(&msg(|m| m["template_type"] = json!("Login Code"))),
            400,
            C,
        ),
        case(
            "template_type with a path",
            Req::sms_json(&msg(|m| m["template_type"] = json!("../../etc/passwd"))),
            400,
            C,
        ),
        case(
            "message_type email",
            Req::sms_json(&msg(|m| m["message_type"] = json!("email"))),
            400,
            C,
        ),
        case(
            "request_headers value not a list",
            Req::sms_json(&msg(|m| m["request_headers"] = json!({"X-A": "b"}))),
            400,
            C,
        ),
        case(
            "request_headers with 33 values",
            Req::sms_json(&msg(|m| {
                m["request_headers"] = json!({"X-Forwarded-For": vec!["203.0.113.7"; 33]})
            })),
            400,
            C,
        ),
        case(
            "request_headers value over 4096 characters",
            Req::sms_json(&msg(|m| {
                m["request_headers"] = json!({"Accept-Language": ["a".repeat(4097)]})
            })),
            400,
            C,
        ),
        case(
            "2^70 as expires_in_minutes",
            Req::sms_json(&msg(|_| {})).with_body_text(|s| {
                s.replace(
                    "\"expires_in_minutes\":15",
                    "\"expires_in_minutes\":1180591620717411303424",
                )
            }),
            400,
            C,
        ),
        case(
            "2^63 as expires_in_minutes",
            Req::sms_json(&msg(|m| {
                m["template_data"]["expires_in_minutes"] = json!(9_223_372_036_854_775_808u64)
            })),
            400,
            C,
        ),
        case(
            "1.5 as expires_in_minutes",
            Req::sms_json(&msg(|m| {
                m["template_data"]["expires_in_minutes"] = json!(1.5)
            })),
            400,
            C,
        ),
        case(
            "a string as expires_in_minutes",
            Req::sms_json(&msg(|m| {
                m["template_data"]["expires_in_minutes"] = json!("60")
            })),
            400,
            C,
        ),
        case(
            "transient channel VOICE in capitals",
            Req::sms_json(&msg(|m| {
                m["template_data"]["transient_payload"] =
                    json!({"phone_courier": {"channel": "VOICE"}})
            })),
            400,
            C,
        ),
        case(
            "template_data as a list",
            Req::sms_json(&msg(|m| m["template_data"] = json!([CODE]))),
            400,
            C,
        ),
        case(
            "login_code as a number",
            Req::voice_json(&msg(|m| m["template_data"]["login_code"] = json!(482917))),
            400,
            C,
        ),
        case(
            "login_code of 65 characters",
            Req::voice_json(&with_code(&"7".repeat(65))),
            400,
            C,
        ),
    ]
}

impl Req {
    fn with_raw_body(mut self, b: &[u8]) -> Req {
        self.body = b.to_vec();
        self
    }

    fn with_body_text(mut self, f: impl FnOnce(&str) -> String) -> Req {
        let s = String::from_utf8(self.body).unwrap();
        self.body = f(&s).into_bytes();
        self
    }
}

fn recipient_cases() -> Vec<Case> {
    const BAD: &str = "invalid_recipient";
    const POLICY: &str = "recipient_not_allowed";
    let r = |name: &str, recipient: &str, code: &'static str| {
        let digits: String = recipient.chars().filter(char::is_ascii_digit).collect();
        let c = case(name, Req::sms_json(&with_recipient(recipient)), 422, code);
        if digits.len() >= 6 {
            c.secret(&digits[digits.len() - 6..])
        } else {
            c
        }
    };
    vec![
        r("full-width digits", "+１４１５５５５０１２３", BAD),
        r("Arabic-Indic digits", "+١٤١٥٥٥٥٠١٢٣", BAD),
        r("Devanagari digits", "+१४१५५५५०१२३", BAD),
        r("superscript digits", "+¹⁴¹⁵⁵⁵⁵⁰¹²³", BAD),
        r("zero-width space inside", "+1415\u{200B}5550123", BAD),
        r("zero-width space in front", "\u{200B}+14155550123", BAD),
        r("BOM in front", "\u{FEFF}+14155550123", BAD),
        r("word joiner at the end", "+14155550123\u{2060}", BAD),
        r("soft hyphen inside", "+1415\u{00AD}5550123", BAD),
        r("right-to-left override", "+1\u{202E}4155550123", BAD),
        r("left-to-right mark at the end", "+14155550123\u{200E}", BAD),
        r(
            "bidi isolate around the digits",
            "+\u{2066}14155550123\u{2069}",
            BAD,
        ),
        r("combining accent", "+14155550123\u{0301}", BAD),
        r("NUL inside", "+1415555\u{0}0123", BAD),
        r("newline inside", "+1415\n5550123", BAD),
        r("'+' that became a space", " 14155550123", BAD),
        r("no '+'", "14155550123", BAD),
        r("international 00 prefix", "0014155550123", BAD),
        r("double '+'", "++14155550123", BAD),
        r("a letter O for a zero", "+1415555O123", BAD),
        r("spaces between groups", "+1 415 555 0123", BAD),
        r("dashes", "+1-415-555-0123", BAD),
        r("national format", "(415) 555-0123", BAD),
        r("extension", "+14155550123;ext=12", BAD),
        r("two numbers", "+14155550123,+14155550124", BAD),
        r("tel: URI", "tel:+14155550123", BAD),
        r("sip: URI", "sip:+14155550123@example.com", BAD),
        r("only '+'", "+", BAD),
        r("too short: one digit", "+1", BAD),
        r("too short: two digits", "+12", BAD),
        r("too long: 16 digits", "+1415555012345678", BAD),
        r("leading zero", "+04155550123", BAD),
        r("no such numbering plan", "+99912345678", BAD),
        r("UK premium rate 09", "+449012345678", POLICY),
        r("UK shared cost 084", "+448431234567", POLICY),
        r("US premium rate 900", "+19002345678", POLICY),
        case(
            "hostile recipient on voice",
            Req::voice_json(&with_recipient("+1415\u{200B}5550123")),
            422,
            BAD,
        ),
    ]
}

fn body_cases() -> Vec<Case> {
    vec![
        case(
            "1601 ASCII characters",
            Req::sms_json(&with_body(&"a".repeat(1601))),
            422,
            "body_too_long",
        ),
        case(
            "1601 emoji (multi-byte, under 1601 UTF-16 units is not the point)",
            Req::sms_json(&with_body(&"😀".repeat(1601))),
            422,
            "body_too_long",
        ),
        case(
            "16384 characters, the schema's maximum",
            Req::sms_json(&with_body(&"9".repeat(16_384))),
            422,
            "body_too_long",
        ),
        case(
            "empty body text",
            Req::sms_json(&with_body("")),
            422,
            "body_empty",
        ),
        case(
            "only white space",
            Req::sms_json(&with_body(" \n\t\r\u{3000}")),
            422,
            "body_empty",
        ),
    ]
}

fn size_cases() -> Vec<Case> {
    const C: &str = "body_too_large";
    let padded = |n: usize| {
        let mut m = msg(|_| {});
        m["padding"] = json!(" ".repeat(n));
        m.to_string()
    };
    vec![
        case(
            "declared 70 000 bytes, nothing sent",
            Req::sms("").framing(Framing::Declared("70000".into())),
            413,
            C,
        ),
        case(
            "declared 65 537 bytes, nothing sent",
            Req::sms("").framing(Framing::Declared("65537".into())),
            413,
            C,
        ),
        case(
            "declared u64::MAX - 3",
            Req::sms("").framing(Framing::Declared((u64::MAX - 3).to_string())),
            413,
            C,
        ),
        // RFC 9112 6.1: with both, Transfer-Encoding wins (the body is the
        // chunked `[]`, so the schema refuses it), never Content-Length.
        case(
            "Content-Length and chunked together (smuggling shape)",
            Req::sms("")
                .framing(Framing::Nothing)
                .add("Content-Length", "2")
                .add("Transfer-Encoding", "chunked")
                .with_raw_body(b"2\r\n[]\r\n0\r\n\r\n"),
            400,
            "schema_violation",
        ),
        case(
            "chunk size that is not hex",
            Req::sms("")
                .framing(Framing::Nothing)
                .add("Transfer-Encoding", "chunked")
                .with_raw_body(b"zz\r\n{}\r\n0\r\n\r\n"),
            400,
            "body_unreadable",
        ),
        http_case(
            "Transfer-Encoding gzip, chunked is not understood",
            Req::sms("")
                .framing(Framing::Nothing)
                .add("Transfer-Encoding", "gzip, chunked")
                .with_raw_body(b"2\r\n{}\r\n0\r\n\r\n"),
            400,
        ),
        case(
            "Expect: 100-continue with 1 MiB declared",
            Req::sms("")
                .add("Expect", "100-continue")
                .framing(Framing::Declared("1048576".into())),
            413,
            C,
        ),
        case(
            "70 KiB sent with its length",
            Req::sms(padded(70 * 1024)),
            413,
            C,
        ),
        case(
            "70 KiB chunked, undeclared",
            Req::sms(padded(70 * 1024)).framing(Framing::Chunked(4096)),
            413,
            C,
        ),
        case(
            "65 537 bytes in one-byte chunks",
            Req::sms(padded(65_537)).framing(Framing::Chunked(1)),
            413,
            C,
        ),
        // NOTE: hyper reserves the top values of u64 and answers 431 (with
        // no JSON body) before the service sees the request; undocumented.
        http_case(
            "declared u64::MAX (hyper answers 431)",
            Req::sms("").framing(Framing::Declared(u64::MAX.to_string())),
            431,
        ),
        http_case(
            "Content-Length over u64",
            Req::sms("{}").framing(Framing::Declared("99999999999999999999999".into())),
            400,
        ),
        http_case(
            "negative Content-Length",
            Req::sms("{}").framing(Framing::Declared("-1".into())),
            400,
        ),
        http_case(
            "two different Content-Lengths",
            Req::sms("{}")
                .add("Content-Length", "2")
                .framing(Framing::Declared("1".into())),
            400,
        ),
        case(
            "body cut short, then half-closed",
            Req::sms("{\"recipient\":").framing(Framing::Declared("1000".into())),
            400,
            "body_unreadable",
        )
        .half_close(),
    ]
}

fn content_type_cases() -> Vec<Case> {
    const C: &str = "unsupported_media_type";
    let body = passes_http_checks();
    let ct = |name: &str, value: &[u8]| {
        case(
            name,
            Req::sms_json(&body).set("Content-Type", value),
            415,
            C,
        )
    };
    let ok = |name: &str, value: &str| {
        case(
            name,
            Req::sms_json(&body).set("Content-Type", value),
            422,
            "invalid_recipient",
        )
    };
    vec![
        case(
            "no Content-Type",
            Req::sms_json(&body).without("Content-Type"),
            415,
            C,
        ),
        ct("text/plain", b"text/plain"),
        ct("form-encoded", b"application/x-www-form-urlencoded"),
        ct("multipart", b"multipart/form-data; boundary=x"),
        ct("application/jsonp", b"application/jsonp"),
        ct(
            "application/json-patch+json",
            b"application/json-patch+json",
        ),
        ct("application/vnd.api+json", b"application/vnd.api+json"),
        ct("bare json", b"json"),
        ct("empty value", b""),
        ct("space inside the type", b"application /json"),
        ct("comma after the type", b"application/json, text/plain"),
        ct(
            "obs-text bytes in a parameter",
            b"application/json; x=\xff\xfe",
        ),
        case(
            "two Content-Type headers, both JSON",
            Req::sms_json(&body).add("Content-Type", "application/json"),
            415,
            C,
        ),
        case(
            "two Content-Type headers, JSON and text",
            Req::sms_json(&body).add("Content-Type", "text/plain"),
            415,
            C,
        ),
        ok("JSON with charset", "application/json; charset=utf-8"),
        ok("JSON in capitals", "APPLICATION/JSON"),
        ok(
            "JSON with odd parameters",
            "application/json;charset=latin1;q=0.1;x",
        ),
        ok(
            "JSON with a quoted parameter",
            "application/json ; boundary=\"a;b\"",
        ),
        ok("JSON with a trailing semicolon", "application/json;"),
    ]
}

fn http_layer_cases() -> Vec<Case> {
    let body = passes_http_checks();
    let r = || Req::sms_json(&body);
    vec![
        http_case(
            "CR inside a header value",
            r().add("X-Test", b"a\rInjected: 1".to_vec()),
            400,
        ),
        http_case(
            "CR inside the Authorization value",
            r().set("Authorization", format!("{}\r", good_auth()).into_bytes()),
            400,
        ),
        http_case(
            "NUL inside a header value",
            r().add("X-Test", b"a\0b".to_vec()),
            400,
        ),
        // NOTE: a bare LF ends a header line (RFC 9112 2.2 allows this), so
        // it cannot smuggle a value: here it makes a second Authorization
        // header, which is refused.
        case(
            "bare LF in a header value starts a second Authorization",
            r().add(
                "X-Test",
                format!("a\nAuthorization: {}", good_auth()).into_bytes(),
            ),
            401,
            "unauthorized",
        ),
        http_case("space inside a header name", r().add("X Test", "1"), 400),
        http_case(
            "header line without a colon",
            r().add_line(b"NoColonHere"),
            400,
        ),
        http_case(
            "obs-fold continuation line",
            r().add_line(b"X-Folded: a\r\n b"),
            400,
        ),
        http_case(
            "CR/LF in the request target",
            r().target("/v1/sms\rX-Injected: 1"),
            400,
        ),
        http_case("space in the request target", r().target("/v1/ sms"), 400),
        http_case(
            "1 MiB header",
            r().add("X-Big", "a".repeat(1024 * 1024)),
            431,
        ),
        http_case(
            "200 headers",
            (0..200).fold(r(), |q, i| q.add(&format!("X-H{i}"), "1")),
            431,
        ),
    ]
}

fn auth_cases() -> Vec<Case> {
    const C: &str = "unauthorized";
    let body = passes_http_checks();
    let a = |name: &str, value: &[u8]| {
        case(
            name,
            Req::sms_json(&body).set("Authorization", value),
            401,
            C,
        )
        .secret(KRATOS_PASSWORD)
    };
    let creds = format!("{KRATOS_USER}:{KRATOS_PASSWORD}");
    let token = b64(creds.as_bytes());
    vec![
        case(
            "no Authorization",
            Req::sms_json(&body).without("Authorization"),
            401,
            C,
        ),
        a("no scheme, only the token", token.as_bytes()),
        a("Bearer scheme", format!("Bearer {token}").as_bytes()),
        a("Digest scheme", b"Digest username=\"kratos\", realm=\"x\""),
        a(
            "scheme glued to the token",
            format!("Basic{token}").as_bytes(),
        ),
        a("tab after the scheme", format!("Basic\t{token}").as_bytes()),
        a("Basic without a token", b"Basic"),
        a("Basic with only spaces", b"Basic     "),
        a("token not base64", b"Basic %%%%"),
        a(
            "token unpadded",
            format!("Basic {}", token.trim_end_matches('=')).as_bytes(),
        ),
        a(
            "token in the URL-safe alphabet with junk",
            format!("Basic {}-_", token.trim_end_matches('=')).as_bytes(),
        ),
        a(
            "no colon",
            basic(&format!("{KRATOS_USER}{KRATOS_PASSWORD}")).as_bytes(),
        ),
        a(
            "empty user",
            basic(&format!(":{KRATOS_PASSWORD}")).as_bytes(),
        ),
        a(
            "empty password",
            basic(&format!("{KRATOS_USER}:")).as_bytes(),
        ),
        a("empty user and password", basic(":").as_bytes()),
        a(
            "user and password swapped",
            basic(&format!("{KRATOS_PASSWORD}:{KRATOS_USER}")).as_bytes(),
        ),
        a(
            "password with a trailing newline",
            basic(&format!("{creds}\n")).as_bytes(),
        ),
        a(
            "password with a NUL appended",
            basic(&format!("{creds}\0")).as_bytes(),
        ),
        a(
            "user in capitals",
            basic(&format!("KRATOS:{KRATOS_PASSWORD}")).as_bytes(),
        ),
        a(
            "password prefix only",
            basic(&format!("{KRATOS_USER}:{}", &KRATOS_PASSWORD[..10])).as_bytes(),
        ),
        a("obs-text after a good token", &{
            let mut v = good_auth().into_bytes();
            v.extend_from_slice(b"\xff");
            v
        }),
        a(
            "16 KiB header",
            format!("Basic {}", "A".repeat(16 * 1024)).as_bytes(),
        ),
        case(
            "two Authorization headers, both right",
            Req::sms_json(&body).add("Authorization", good_auth()),
            401,
            C,
        ),
        case(
            "two Authorization headers, right and empty",
            Req::sms_json(&body).add("Authorization", ""),
            401,
            C,
        ),
        case(
            "two Authorization headers, wrong then right",
            Req::sms_json(&body)
                .set("Authorization", basic("kratos:nope"))
                .add("Authorization", good_auth()),
            401,
            C,
        ),
        case(
            "credentials in the query string only",
            Req::sms_json(&body)
                .without("Authorization")
                .target(&format!("/v1/sms?authorization={token}")),
            401,
            C,
        ),
        case(
            "credentials in the URL's user info only",
            Req::sms_json(&body)
                .without("Authorization")
                .target(&format!("http://{creds}@courier.test/v1/sms")),
            401,
            C,
        ),
    ]
}

fn voice_cases() -> Vec<Case> {
    const C: &str = "invalid_code";
    let v =
        |name: &str, code: &str| case(name, Req::voice_json(&with_code(code)), 422, C).secret(code);
    vec![
        v("TwiML <Dial> in the code", "<Dial>+19005550000</Dial>"),
        v("TwiML <Play> in the code", "<Play>http://x/</Play>"),
        v("ampersand", "48&917"),
        v("entity", "&amp;4829"),
        v("double quote", "48\"917"),
        v("single quote", "48'917"),
        v("less-than", "48<917"),
        v("CDATA end", "]]>4829"),
        v("XML comment", "<!--4829-->"),
        v("space inside", "48 917"),
        v("newline inside", "4829\n17"),
        v("zero-width space inside", "48\u{200B}917"),
        v("full-width digits", "４８２９１７"),
        v("Devanagari digits", "४८२९१७"),
        v("accented letter", "4829é7"),
        v("too short", "482"),
        v("13 characters", "4829174829174"),
        v("SSML break in the code", "<break time=\"9s\"/>"),
        case(
            "no code at all",
            Req::voice_json(&msg(|m| {
                m["template_data"] = json!({"expires_in_minutes": 15})
            })),
            422,
            C,
        ),
        case(
            "template_data null",
            Req::voice_json(&msg(|m| m["template_data"] = Value::Null)),
            422,
            C,
        ),
        case(
            "/v1/sms asking for voice, with a <Play> code",
            Req::sms_json(&msg(|m| {
                m["template_data"]["login_code"] = json!("<Play>x</Play>");
                m["template_data"]["transient_payload"] =
                    json!({"phone_courier": {"channel": "voice"}});
            })),
            422,
            C,
        ),
        case(
            "/v1/sms with the voice trait, with an ampersand code",
            Req::sms_json(&msg(|m| {
                m["template_data"]["login_code"] = json!("12&34");
                m["template_data"]["identity"] = json!({"traits": {"phone_channel": "voice"}});
            })),
            422,
            C,
        ),
        case(
            "hostile Accept-Language with a bad code",
            Req::voice_json(&msg(|m| {
                m["template_data"]["login_code"] = json!("12\"34");
                m["request_headers"]["Accept-Language"] =
                    json!(["en\"><Dial>+19005550000</Dial><Say x=\""]);
            })),
            422,
            C,
        ),
    ]
}

fn route_cases() -> Vec<Case> {
    const M: &str = "method_not_allowed";
    const N: &str = "not_found";
    let body = passes_http_checks();
    let m = |method: &str, path: &str| {
        case(
            &format!("{method} {path}"),
            Req::post(path, body.to_string()).method(method),
            405,
            M,
        )
    };
    let n = |path: &str| {
        case(
            &format!("POST {path}"),
            Req::post(path, body.to_string()),
            404,
            N,
        )
    };
    vec![
        m("TRACE", "/v1/sms"),
        m("OPTIONS", "/v1/sms"),
        m("GET", "/v1/sms"),
        m("PUT", "/v1/sms"),
        m("PATCH", "/v1/sms"),
        m("DELETE", "/v1/voice"),
        m("TRACE", "/v1/voice"),
        m("post", "/v1/sms"),
        m("FOO", "/v1/sms"),
        m("POST", "/v1/test-messages"),
        m("TRACE", "/health/alive"),
        http_case(
            "HEAD /v1/sms (no body on HEAD)",
            Req::sms("").method("HEAD").framing(Framing::Nothing),
            405,
        ),
        n("/v1/sms/"),
        n("/V1/SMS"),
        n("/v1//sms"),
        n("/v1/%73ms"),
        n("/v1/sms/../sms"),
        n("/v1/sms%00"),
        n("/v1/sms;x=1"),
        n("/v2/sms"),
        n(&format!("/v1/{}", "a".repeat(8000))),
        case("OPTIONS *", Req::post("*", "").method("OPTIONS"), 404, N),
        case(
            "absolute-form target is routed by its path",
            Req::post("http://evil.example/v1/sms", body.to_string()),
            422,
            "invalid_recipient",
        ),
        case(
            "query string is ignored",
            Req::post("/v1/sms?to=%2B19005550000&x=%3Cscript%3E", body.to_string()),
            422,
            "invalid_recipient",
        ),
    ]
}

// ---------------------------------------------------------------------------
// Running a table
// ---------------------------------------------------------------------------

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    raw: String,
}

fn parse_answer(raw: &str) -> Option<Answer> {
    let (head, rest) = raw.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let body = match length {
        Some(n) => rest.get(..n.min(rest.len())).unwrap_or(rest).to_owned(),
        None => rest.to_owned(),
    };
    Some(Answer {
        status,
        headers,
        body,
        raw: raw.to_owned(),
    })
}

/// Write the request, optionally half-close, read until the server closes.
/// Bounded in time, so a hang is a failure, not a stuck suite.
async fn exchange(app: &TestApp, request: &[u8], half_close: bool) -> Result<String, String> {
    let work = async {
        if !half_close {
            return raw_exchange(app.addr, request).await;
        }
        let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        let _ = stream.write_all(request).await;
        let _ = stream.shutdown().await;
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| "no answer within 10 s (hang)".to_owned())
}

/// Run every case against one app; return a description of each failure.
async fn run_table(app: &TestApp, cases: &[Case]) -> Vec<String> {
    let mut failures = Vec::new();
    for c in cases {
        let before = app.provider_requests().await.len();
        let mut problems = Vec::new();
        match exchange(app, &c.request.bytes(), c.half_close).await {
            Err(e) => problems.push(e),
            Ok(raw) => match parse_answer(&raw) {
                None => problems.push(format!("no HTTP answer: {:?}", clip(&raw))),
                Some(answer) => check_answer(c, &answer, &mut problems),
            },
        }
        let after = app.provider_requests().await.len();
        if after != before {
            problems.push(format!("Twilio received {} request(s)", after - before));
        }
        if !problems.is_empty() {
            failures.push(format!("[{}] {}", c.name, problems.join("; ")));
        }
    }
    failures
}

fn clip(s: &str) -> String {
    s.chars().take(300).collect()
}

fn check_answer(c: &Case, answer: &Answer, problems: &mut Vec<String>) {
    if answer.status != c.status {
        problems.push(format!(
            "status {} (expected {}): {}",
            answer.status,
            c.status,
            clip(&answer.body)
        ));
    }
    if answer.body.len() >= 1024 {
        problems.push(format!("answer body is {} bytes", answer.body.len()));
    }
    let header = |name: &str| {
        answer
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    if let Some(code) = c.code {
        if header("content-type") != Some("application/json") {
            problems.push(format!("content-type {:?}", header("content-type")));
        }
        match serde_json::from_str::<Value>(&answer.body) {
            Err(_) => problems.push(format!("answer is not JSON: {:?}", clip(&answer.body))),
            Ok(v) => {
                if error_code(&v) != code {
                    problems.push(format!(
                        "error.code {:?} (expected {code:?})",
                        error_code(&v)
                    ));
                }
                if !v["error"]["message"].is_string() {
                    problems.push("no error.message".into());
                }
            }
        }
    }
    match answer.status {
        401 if header("www-authenticate").is_none() => {
            problems.push("401 without WWW-Authenticate".into())
        }
        405 if header("allow").is_none() => problems.push("405 without Allow".into()),
        _ => {}
    }
    for s in ALWAYS_SECRET
        .iter()
        .copied()
        .chain(c.secrets.iter().map(String::as_str))
    {
        if !s.is_empty() && answer.raw.contains(s) {
            problems.push(format!("answer echoes {s:?}"));
        }
    }
}

async fn assert_table(cases: Vec<Case>) {
    let app = spawn_app().await;
    let n = cases.len();
    let failures = run_table(&app, &cases).await;
    assert!(
        failures.is_empty(),
        "{} of {n} hostile cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    app.assert_provider_untouched().await;
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// The request every case is a variation of is itself accepted, so a
/// refusal in the table is the hostile part's doing.
#[tokio::test]
async fn the_unmodified_request_is_accepted() {
    let app = spawn_app().await;
    for (path, req) in [
        ("/v1/sms", Req::sms_json(&msg(|_| {}))),
        (
            "/v1/voice",
            Req::voice_json(&msg(|m| m["body"] = json!("b"))),
        ),
        (
            "/v1/sms chunked",
            Req::sms_json(&msg(|m| m["body"] = json!("c"))).framing(Framing::Chunked(7)),
        ),
    ] {
        let raw = exchange(&app, &req.bytes(), false).await.unwrap();
        let answer = parse_answer(&raw).expect("an HTTP answer");
        assert_eq!(answer.status, 200, "{path}: {raw}");
        let v: Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(v["status"], "accepted", "{path}");
    }
    assert_eq!(app.provider_requests().await.len(), 3);
}

#[tokio::test]
async fn malformed_json_is_400() {
    assert_table(malformed_json_cases()).await;
}

#[tokio::test]
async fn schema_violations_are_400() {
    assert_table(schema_cases()).await;
}

#[tokio::test]
async fn hostile_recipients_are_422() {
    assert_table(recipient_cases()).await;
}

#[tokio::test]
async fn hostile_bodies_are_422() {
    assert_table(body_cases()).await;
}

#[tokio::test]
async fn oversize_and_broken_framing() {
    assert_table(size_cases()).await;
}

#[tokio::test]
async fn content_types() {
    assert_table(content_type_cases()).await;
}

#[tokio::test]
async fn header_injection_is_refused_by_the_http_layer() {
    assert_table(http_layer_cases()).await;
}

#[tokio::test]
async fn malformed_credentials_are_401() {
    assert_table(auth_cases()).await;
}

#[tokio::test]
async fn voice_codes_with_markup_are_422() {
    assert_table(voice_cases()).await;
}

#[tokio::test]
async fn methods_and_paths() {
    assert_table(route_cases()).await;
}

/// The count the brief asks for, kept honest.
#[test]
fn the_battery_has_at_least_60_cases() {
    let n = [
        malformed_json_cases(),
        schema_cases(),
        recipient_cases(),
        body_cases(),
        size_cases(),
        content_type_cases(),
        http_layer_cases(),
        auth_cases(),
        voice_cases(),
        route_cases(),
        known_bug_cases(),
    ]
    .iter()
    .map(Vec::len)
    .sum::<usize>();
    assert!(n >= 60, "{n} cases");
}

/// Cases this battery first found answered wrongly, now fixed.
fn known_bug_cases() -> Vec<Case> {
    vec![
        // Was a bug: serde_json keeps the last of two equal keys, so a body
        // with two "recipient" keys was sent to whichever came last (a proxy
        // or log reading the first would see another number). Duplicate keys
        // are refused as malformed JSON.
        case(
            "two recipient keys",
            Req::sms(format!(
                r#"{{"recipient":"{NUMBER}","recipient":"+14155550199","body":"{BODY}","template_type":"login_code_valid"}}"#
            )),
            400,
            "malformed_json",
        )
        .secret("4155550199"),
        case(
            "two login_code keys on voice",
            Req::voice(format!(
                r#"{{"recipient":"{NUMBER}","body":"b","template_type":"login_code_valid","template_data":{{"login_code":"<Dial>","login_code":"{CODE}"}}}}"#
            )),
            400,
            "malformed_json",
        ),
        // Was a bug (slowloris on the body): now cut off after
        // server.body_read_timeout_ms.
        case(
            "body cut short, connection held open",
            Req::sms("{\"recipient\":").framing(Framing::Declared("1000".into())),
            408,
            "request_timeout",
        ),
        // Was a bug: a body with nothing visible was sent as an SMS.
        case(
            "body of zero-width spaces only",
            Req::sms_json(&with_body("\u{200B}\u{200B}\u{FEFF}")),
            422,
            "body_empty",
        ),
    ]
}

#[tokio::test]
async fn formerly_known_bugs() {
    assert_table(known_bug_cases()).await;
}
