//! `[voice]`: what a call says, per language tag. A table's missing
//! sentences come from the default language's table, then from the
//! compiled-in `config/default.toml`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::error::{refuse_if, ConfigError};
use super::load::built_in;
use super::values::{parsed, within};
use crate::domain::LanguageTag;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VoiceSettings {
    #[serde(rename = "trait")]
    pub(crate) trait_name: String,
    pub(crate) voice: String,
    #[serde(deserialize_with = "parsed")]
    pub(crate) language: LanguageTag,
    #[serde(deserialize_with = "within::<_, u32, 1, 10>")]
    pub(crate) pause_seconds: u32,
    pub(crate) sentences: BTreeMap<String, SentenceSettings>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SentenceSettings {
    pub(crate) voice: Option<String>,
    pub(crate) login: Option<String>,
    pub(crate) registration: Option<String>,
    pub(crate) verification: Option<String>,
    pub(crate) recovery: Option<String>,
    pub(crate) other: Option<String>,
    pub(crate) again: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VoiceConfig {
    #[serde(rename = "trait")]
    pub(crate) trait_name: String,
    pub(crate) voice: String,
    /// Spoken when the end user's Accept-Language matches no table; always
    /// a key of `sentences`.
    pub language: LanguageTag,
    pub(crate) pause_seconds: u32,
    /// Every configured language, each with every sentence filled in.
    pub sentences: BTreeMap<LanguageTag, Sentences>,
}

/// What is said for one language. Missing entries fall back to the default
/// language's, then to the built-in defaults'.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sentences {
    pub(crate) voice: Option<String>,
    pub(crate) login: String,
    pub(crate) registration: String,
    pub(crate) verification: String,
    pub(crate) recovery: String,
    pub(crate) other: String,
    pub(crate) again: String,
}

/// TwiML is limited to 4000 characters and every sentence is said once with
/// the code; 500 leaves room for both sentences, escaped, and the markup.
const MAX_SENTENCE_CHARS: usize = 500;

impl VoiceSettings {
    pub(super) fn check(self) -> Result<VoiceConfig, ConfigError> {
        refuse_if(
            self.trait_name.is_empty(),
            "voice.trait",
            "must not be empty",
        )?;
        refuse_if(self.voice.is_empty(), "voice.voice", "must not be empty")?;
        let language = self.language;
        let mut raw = BTreeMap::new();
        for (tag, s) in self.sentences {
            let norm = LanguageTag::normalize(&tag).ok_or_else(|| {
                ConfigError::invalid(
                    &format!("voice.sentences.{tag}"),
                    "the table name must be a language tag such as de-DE",
                )
            })?;
            // `en-US` from the file and `en-us` from the environment are
            // the same language: merge them, later keys winning per field.
            match raw.remove(&norm) {
                None => raw.insert(norm, s),
                Some(prev) => raw.insert(norm, overlay(prev, s)),
            };
        }
        let built_in = built_in_sentences()?;
        let base = match raw.get(&language) {
            Some(d) => fill(d, built_in),
            None => built_in.clone(),
        };
        let mut sentences = BTreeMap::new();
        for (tag, s) in &raw {
            let filled = fill(s, &base);
            for (name, text) in [
                ("login", &filled.login),
                ("registration", &filled.registration),
                ("verification", &filled.verification),
                ("recovery", &filled.recovery),
                ("other", &filled.other),
                ("again", &filled.again),
            ] {
                refuse_if(
                    text.chars().count() > MAX_SENTENCE_CHARS,
                    &format!("voice.sentences.{tag}.{name}"),
                    "must be at most 500 characters (TwiML is limited to 4000)",
                )?;
            }
            sentences.insert(tag.clone(), filled);
        }
        sentences.entry(language.clone()).or_insert(base);
        Ok(VoiceConfig {
            trait_name: self.trait_name,
            voice: self.voice,
            language,
            pause_seconds: self.pause_seconds,
            sentences,
        })
    }
}

/// The sentences of the built-in default language, as the compiled-in
/// defaults file gives them (not as a file or the environment may have
/// changed them: they are the last resort). Read once.
fn built_in_sentences() -> Result<&'static Sentences, ConfigError> {
    static BUILT_IN: OnceLock<Result<Sentences, ConfigError>> = OnceLock::new();
    BUILT_IN
        .get_or_init(read_built_in)
        .as_ref()
        .map_err(Clone::clone)
}

fn read_built_in() -> Result<Sentences, ConfigError> {
    let language: String = built_in("voice.language")?;
    built_in(&format!("voice.sentences.{language}"))
}

fn overlay(base: SentenceSettings, top: SentenceSettings) -> SentenceSettings {
    SentenceSettings {
        voice: top.voice.or(base.voice),
        login: top.login.or(base.login),
        registration: top.registration.or(base.registration),
        verification: top.verification.or(base.verification),
        recovery: top.recovery.or(base.recovery),
        other: top.other.or(base.other),
        again: top.again.or(base.again),
    }
}

fn fill(s: &SentenceSettings, base: &Sentences) -> Sentences {
    let pick = |v: &Option<String>, d: &String| v.clone().unwrap_or_else(|| d.clone());
    Sentences {
        voice: s.voice.clone().or_else(|| base.voice.clone()),
        login: pick(&s.login, &base.login),
        registration: pick(&s.registration, &base.registration),
        verification: pick(&s.verification, &base.verification),
        recovery: pick(&s.recovery, &base.recovery),
        other: pick(&s.other, &base.other),
        again: pick(&s.again, &base.again),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_file_has_every_sentence_of_its_default_language() {
        let s = built_in_sentences().unwrap();
        assert_eq!(s.login, "Your login code is");
        assert_eq!(s.other, "Your code is");
        assert_eq!(s.again, "Again");
        assert_eq!(s.voice, None);
    }
}
