//! Arbitrary bytes as a courier request body: the schema and typed parse,
//! then (when it parses) the recipient check and the TwiML for its code.
//! Nothing here may panic, and TwiML built from any code stays well-formed.
#![no_main]

use std::sync::OnceLock;

use kratos_phone_courier::delivery::message::MessageParser;
use kratos_phone_courier::phone::{NumberingPlan, Recipient};
use kratos_phone_courier::provider::twiml::{code_twiml, is_speakable_code, Speech};
use libfuzzer_sys::fuzz_target;

fn parser() -> &'static MessageParser {
    static P: OnceLock<MessageParser> = OnceLock::new();
    P.get_or_init(MessageParser::new)
}

/// One plan for the run, as the service holds one: a plan per input would
/// spend the run compiling patterns.
fn plan() -> &'static NumberingPlan {
    static P: OnceLock<NumberingPlan> = OnceLock::new();
    P.get_or_init(NumberingPlan::new)
}

fuzz_target!(|data: &[u8]| {
    let Ok(message) = parser().parse(data) else {
        return;
    };
    if let Ok(r) = Recipient::parse_with(plan(), &message.recipient) {
        let digits = &r.e164()[1..];
        assert!(digits.len() >= 2 && digits.bytes().all(|b| b.is_ascii_digit()));
        let masked = r.masked();
        assert!(masked.chars().filter(char::is_ascii_digit).count() <= 5 + 2);
    }
    let _ = message.identity_trait("phone_channel");
    let _ = message.request_header("accept-language");
    if let Some(code) = &message.code {
        // The courier only speaks speakable codes, but escaping must hold
        // for any: the document never gains elements.
        let speech = Speech {
            voice: "alice",
            language: "en-US",
            intro: &message.body,
            again: "Again",
            pause_seconds: 1,
        };
        let twiml = code_twiml(&speech, code);
        assert_eq!(twiml.matches('<').count(), 8, "markup injected");
        if is_speakable_code(code) {
            assert!(twiml.contains(
                &code
                    .chars()
                    .map(String::from)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
});
