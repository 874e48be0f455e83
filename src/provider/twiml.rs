//! TwiML that speaks a one-time code, and the choice of language.
//!
//! The code is spoken digit by digit ("4, 8, 2"): Twilio reads `482` as
//! "four hundred eighty-two". It is said twice with a pause between, since a
//! listener often misses the first reading. Every dynamic string is
//! XML-escaped; the code itself is restricted to ASCII letters and digits
//! before it gets here.

use crate::config::{Sentences, VoiceConfig};
use crate::domain::LanguageTag;
use crate::domain::TemplateType;

/// Twilio's limit for inline TwiML on a call.
pub(crate) const MAX_TWIML_CHARS: usize = 4000;

/// A code Twilio can speak: 4 to 12 ASCII letters or digits.
pub fn is_speakable_code(code: &str) -> bool {
    (4..=12).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Escape the five XML special characters, for text and attribute values.
/// Control characters other than tab/newline are dropped: XML 1.0 cannot
/// carry them at all.
pub fn escape_xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// What to say and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Speech<'a> {
    pub voice: &'a str,
    pub language: &'a str,
    pub intro: &'a str,
    pub again: &'a str,
    pub pause_seconds: u32,
}

/// Pick the language from the end user's `Accept-Language`, falling back to
/// the configured default, and the sentence for the template.
pub(crate) fn speech_for<'a>(
    config: &'a VoiceConfig,
    template: &TemplateType,
    accept_language: Option<&str>,
) -> Speech<'a> {
    let (language, sentences) = pick_language(config, accept_language);
    let intro = match template {
        TemplateType::Login => &sentences.login,
        TemplateType::Registration => &sentences.registration,
        TemplateType::Verification => &sentences.verification,
        TemplateType::Recovery => &sentences.recovery,
        TemplateType::Other(_) => &sentences.other,
    };
    Speech {
        voice: sentences.voice.as_deref().unwrap_or(&config.voice),
        language,
        intro,
        again: &sentences.again,
        pause_seconds: config.pause_seconds,
    }
}

fn pick_language<'a>(
    config: &'a VoiceConfig,
    accept_language: Option<&str>,
) -> (&'a str, &'a Sentences) {
    let default = || {
        let (k, v) = config
            .sentences
            .get_key_value(&config.language)
            .expect("the default language always has sentences");
        (k.as_str(), v)
    };
    let Some(header) = accept_language else {
        return default();
    };
    // Language ranges by descending quality; equal qualities keep their order.
    let mut ranges: Vec<(LanguageTag, f32)> = header
        .split(',')
        .take(16)
        .filter_map(|part| {
            let mut it = part.split(';');
            let tag = LanguageTag::normalize(it.next()?)?;
            let q = it
                .find_map(|p| p.trim().strip_prefix("q="))
                .map(|q| q.trim().parse::<f32>().unwrap_or(0.0))
                .unwrap_or(1.0);
            (q > 0.0).then_some((tag, q))
        })
        .collect();
    ranges.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
    for (tag, _) in &ranges {
        if let Some((k, v)) = config.sentences.get_key_value(tag) {
            return (k.as_str(), v);
        }
        // `de` or `de-AT` is served by a configured `de-DE`.
        let primary = tag.split('-').next().unwrap_or(tag);
        if let Some((k, v)) = config
            .sentences
            .iter()
            .find(|(k, _)| k.split('-').next() == Some(primary))
        {
            return (k.as_str(), v);
        }
    }
    default()
}

/// The TwiML document for a call that speaks `code` twice.
pub fn code_twiml(speech: &Speech<'_>, code: &str) -> String {
    let spaced = code
        .chars()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let voice = escape_xml(speech.voice);
    let language = escape_xml(speech.language);
    let say = |text: String| {
        format!(
            "<Say voice=\"{voice}\" language=\"{language}\">{}</Say>",
            escape_xml(&text)
        )
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>{}<Pause length=\"{}\"/>{}</Response>",
        say(format!(
            "{}: {spaced}.",
            speech.intro.trim_end_matches([':', ' '])
        )),
        speech.pause_seconds,
        say(format!(
            "{}: {spaced}.",
            speech.again.trim_end_matches([':', ' '])
        )),
    )
}

/// The TwiML document for a call that reads a notification's text (a
/// message without a code, to a number that takes no SMS) once, escaped.
pub(crate) fn text_twiml(speech: &Speech<'_>, text: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Say voice=\"{}\" language=\"{}\">{}</Say></Response>",
        escape_xml(speech.voice),
        escape_xml(speech.language),
        escape_xml(text.trim()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn sentences(voice: Option<&str>, login: &str) -> Sentences {
        Sentences {
            voice: voice.map(str::to_owned),
            login: login.into(),
            registration: "r".into(),
            verification: "v".into(),
            recovery: "c".into(),
            other: "o".into(),
            again: "Again".into(),
        }
    }

    fn tag(s: &str) -> LanguageTag {
        s.parse().unwrap()
    }

    fn config() -> VoiceConfig {
        let mut s = BTreeMap::new();
        s.insert(tag("en-US"), sentences(None, "Your login code is"));
        s.insert(
            tag("de-DE"),
            sentences(Some("Polly.Marlene"), "Ihr Anmeldecode lautet"),
        );
        VoiceConfig {
            trait_name: "phone_channel".into(),
            voice: "alice".into(),
            language: tag("en-US"),
            pause_seconds: 1,
            sentences: s,
        }
    }

    #[test]
    fn speaks_digits_twice() {
        let c = config();
        let s = speech_for(&c, &TemplateType::Login, None);
        assert_eq!(
            code_twiml(&s, "482917"),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>\
             <Say voice=\"alice\" language=\"en-US\">Your login code is: 4, 8, 2, 9, 1, 7.</Say>\
             <Pause length=\"1\"/>\
             <Say voice=\"alice\" language=\"en-US\">Again: 4, 8, 2, 9, 1, 7.</Say></Response>"
        );
    }

    #[test]
    fn accept_language_picks_configured_language() {
        let c = config();
        let s = speech_for(&c, &TemplateType::Login, Some("de-AT,de;q=0.9,en;q=0.8"));
        assert_eq!(s.language, "de-DE");
        assert_eq!(s.voice, "Polly.Marlene");
        assert_eq!(s.intro, "Ihr Anmeldecode lautet");
        let s = speech_for(&c, &TemplateType::Login, Some("fr-FR, en;q=0.5"));
        assert_eq!(s.language, "en-US");
        let s = speech_for(&c, &TemplateType::Login, Some("en;q=0.2, de;q=0.9"));
        assert_eq!(s.language, "de-DE");
        let s = speech_for(&c, &TemplateType::Login, Some("fr"));
        assert_eq!(s.language, "en-US");
        let s = speech_for(&c, &TemplateType::Login, Some("de;q=0"));
        assert_eq!(s.language, "en-US");
    }

    #[test]
    fn escapes_dynamic_text() {
        let speech = Speech {
            voice: "a\"><Dial>x</Dial>",
            language: "en-US",
            intro: "Code <Play>&",
            again: "'again'",
            pause_seconds: 1,
        };
        let t = code_twiml(&speech, "1234");
        assert!(!t.contains("<Dial>"));
        assert!(!t.contains("<Play>"));
        assert!(t.contains("Code &lt;Play&gt;&amp;: 1, 2, 3, 4."));
        assert!(t.contains("&apos;again&apos;: 1, 2, 3, 4."));
    }

    #[test]
    fn speakable_codes() {
        assert!(is_speakable_code("1234"));
        assert!(is_speakable_code("AbC123xyz789"));
        assert!(!is_speakable_code("123"));
        assert!(!is_speakable_code("1234567890123"));
        assert!(!is_speakable_code("12 34"));
        assert!(!is_speakable_code("１２３４"));
    }
}
