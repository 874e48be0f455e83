//! [`ConfigError`], and the one place the `config` crate's errors are turned
//! into ours.
//!
//! The `config` crate's messages are written for a developer at a terminal:
//! a TOML syntax error quotes the line that failed to parse (which may be
//! `auth_token = "..."`), and a type error quotes the value it found. Such a
//! message ends up in a container log or a pasted issue. So every error from
//! loading is rebuilt here from its parts — which file, which line and column,
//! which key, what kind of mistake — and never from the text of the file or
//! the value. No line and no value is echoed, whatever the key: a secret
//! can sit in any of them (a table written as a string, a token pasted
//! into the wrong key).

use std::error::Error as StdError;
use std::path::Path;

/// A configuration mistake, always naming the key to fix or, for a file that
/// does not parse, the file and the position in it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
    #[error("configuration could not be read: {0}")]
    Load(String),
}

impl ConfigError {
    pub(crate) fn invalid(key: &str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.to_owned(),
            reason: reason.into(),
        }
    }

    /// An error of the `config` crate, rebuilt without any value or line of
    /// the configuration. `file` is the file given on the command line, read
    /// again only to turn a byte offset into a line and a column.
    /// A value refused where it was read (by serde or by a checking reader,
    /// `values`) becomes [`ConfigError::Invalid`] at that key.
    pub(crate) fn loading(e: &config::ConfigError, file: Option<&Path>) -> Self {
        use config::ConfigError as E;
        match e {
            E::At {
                key: Some(key),
                error,
                ..
            } => match error.as_ref() {
                E::Message(m) => match unknown_field(m) {
                    // Named as the key it would be (`providers[0].auth_token`).
                    Some((field, allowed)) => ConfigError::invalid(
                        &format!("{}.{field}", dotted(key)),
                        format!("is not a key here; expected {allowed}"),
                    ),
                    None => ConfigError::invalid(&dotted(key), serde_message(m)),
                },
                _ => ConfigError::Load(describe(e, file)),
            },
            _ => ConfigError::Load(describe(e, file)),
        }
    }
}

/// Refused at `key` for `reason` when `refused` holds.
pub(crate) fn refuse_if(
    refused: bool,
    key: &str,
    reason: impl Into<String>,
) -> Result<(), ConfigError> {
    match refused {
        true => Err(ConfigError::invalid(key, reason)),
        false => Ok(()),
    }
}

/// What went wrong, in words that quote keys, file names and positions but
/// never a value or a line of the file.
fn describe(e: &config::ConfigError, file: Option<&Path>) -> String {
    use config::ConfigError as E;
    match e {
        E::Frozen => "the configuration is frozen".to_owned(),
        E::NotFound(key) => format!("the key `{key}` is missing"),
        // Only key names are parsed as paths (from environment variable
        // names), never values.
        E::PathParse { cause } => format!("a key name is not a valid key path: {cause}"),
        E::FileParse { uri, cause } => file_parse(uri.is_some(), cause.as_ref(), file),
        E::Type {
            origin,
            unexpected,
            expected,
            key,
        } => {
            // `unexpected` is rendered only to read its kind.
            let found = match value_kind(&unexpected.to_string()) {
                // An integer where an integer was expected: negative, or too
                // large for the key.
                "an integer" if expected.contains("integer") => "an integer out of range",
                kind => kind,
            };
            format!(
                "{}expected {expected}, found {found}{}",
                key_prefix(key.as_deref()),
                origin_suffix(origin.as_deref()),
            )
        }
        // An error from deeper down, with the key it was found at.
        E::At { error, origin, key } => format!(
            "{}{}{}",
            key_prefix(key.as_deref()),
            describe(error, file),
            origin_suffix(origin.as_deref())
        ),
        E::Message(message) => serde_message(message),
        // From reading the file (not found, not UTF-8, no permission): an
        // I/O error names a path at most.
        E::Foreign(cause) => cause.to_string(),
        _ => "the configuration loader failed in a way it does not describe".to_owned(),
    }
}

fn key_prefix(key: Option<&str>) -> String {
    key.map(|k| format!("key `{}`: ", dotted(k)))
        .unwrap_or_default()
}

/// serde's `unknown field `f`, expected one of ...`: the field and what
/// is allowed. The field is a key name, never a value.
fn unknown_field(message: &str) -> Option<(&str, &str)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    Some((
        field,
        rest.strip_prefix(", expected ").unwrap_or("another key"),
    ))
}

/// The `config` crate writes a key inside a list as `routes[0]from`: the
/// dot goes back in (`routes[0].from`).
fn dotted(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 2);
    let mut chars = key.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == ']' && chars.peek().is_some_and(|n| !matches!(n, '[' | '.')) {
            out.push('.');
        }
    }
    out
}

fn origin_suffix(origin: Option<&str>) -> String {
    origin.map(|o| format!(" (in {o})")).unwrap_or_default()
}

/// The kind of a value as serde or the `config` crate render it ("string
/// \"...\"", "64-bit integer `5`", "map"), without the value itself.
fn value_kind(rendered: &str) -> &'static str {
    const KINDS: &[(&str, &str)] = &[
        ("string", "a string"),
        ("boolean", "a boolean"),
        ("floating point", "a number"),
        ("integer", "an integer"),
        ("64-bit", "an integer"),
        ("128-bit", "an integer"),
        ("character", "a character"),
        ("byte array", "bytes"),
        ("unit value", "an empty value"),
        ("Option value", "an optional value"),
        ("sequence", "a list"),
        ("map", "a table"),
    ];
    KINDS
        .iter()
        .find(|(prefix, _)| rendered.starts_with(prefix))
        .map_or("a value of another kind", |(_, kind)| kind)
}

/// A serde error message, with any value it quotes left out. serde renders
/// `invalid type: <found>, expected <wanted>` (and `invalid value: ...`),
/// where `<found>` may carry the value and `<wanted>` is text from the code;
/// `unknown variant` quotes the value too. Field names are keys and stay.
fn serde_message(message: &str) -> String {
    if let Some(reason) = message.strip_prefix(super::values::CHECKED) {
        return reason.to_owned();
    }
    for lead in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(lead) {
            // The expected text comes from our types and never contains the
            // separator; the value might, so split at the last one.
            return match rest.rsplit_once(", expected ") {
                Some((found, wanted)) => {
                    format!("{lead}expected {wanted}, found {}", value_kind(found))
                }
                None => lead.trim_end_matches([':', ' ']).to_owned(),
            };
        }
    }
    if message.starts_with("unknown variant") {
        return match message.rsplit_once(", expected ") {
            Some((_, wanted)) => format!("unknown variant, expected {wanted}"),
            None => "unknown variant".to_owned(),
        };
    }
    let keeps_no_value = [
        "unknown field `",
        "duplicate field `",
        "missing field `",
        "invalid length ",
    ];
    if keeps_no_value.iter().any(|p| message.starts_with(p)) {
        return message.to_owned();
    }
    "a value could not be read (the message is not shown, as it may quote the value)".to_owned()
}

/// A file (or the built-in defaults) that did not parse: where, and what
/// kind of mistake, from the parser's error value rather than its text.
fn file_parse(
    from_file: bool,
    cause: &(dyn StdError + Send + Sync + 'static),
    file: Option<&Path>,
) -> String {
    let name = match (from_file, file) {
        (true, Some(f)) => f.display().to_string(),
        (true, None) => "the configuration file".to_owned(),
        (false, _) => "the built-in defaults".to_owned(),
    };
    if let Some(e) = cause.downcast_ref::<toml::de::Error>() {
        let at = e
            .span()
            .zip(file.filter(|_| from_file))
            .and_then(|(span, f)| line_column(f, span.start))
            .map(|(line, column)| format!(" at line {line}, column {column}"))
            .unwrap_or_default();
        // toml's message is the grammar's description ("invalid basic
        // string, expected `\"`", "duplicate key"), never the input.
        return format!("{name} is not valid TOML{at}: {}", e.message());
    }
    if let Some(e) = cause.downcast_ref::<yaml_rust2::ScanError>() {
        let m = e.marker();
        // The scanner's lines count from 1 and its columns from 0.
        return format!(
            "{name} is not valid YAML at line {}, column {}: {}",
            m.line(),
            m.col() + 1,
            unquoted(e.info())
        );
    }
    if let Some(e) = cause.downcast_ref::<config::ConfigError>() {
        return format!("{name}: {}", describe(e, file));
    }
    if cause.is::<std::num::ParseIntError>() || cause.is::<std::num::ParseFloatError>() {
        // "number too large to fit in target type": no digits quoted.
        return format!("{name}: a number cannot be read: {cause}");
    }
    format!(
        "{name} could not be parsed (the parser's message is not shown, as it may quote the file)"
    )
}

/// The 1-based line and column of a byte offset, counting characters.
fn line_column(file: &Path, offset: usize) -> Option<(usize, usize)> {
    let text = std::fs::read(file).ok()?;
    let before = &text[..offset.min(text.len())];
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    Some((line, column))
}

/// A scanner message up to the first quoted fragment: yaml-rust2 quotes the
/// character it stumbled on ("unexpected character: `@'").
fn unquoted(info: &str) -> &str {
    info.split(['`', '\'', '"'])
        .next()
        .unwrap_or_default()
        .trim_end_matches([':', ' '])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_lose_their_values() {
        assert_eq!(
            serde_message(r#"invalid type: string "a, expected b\"", expected struct X"#),
            "invalid type: expected struct X, found a string"
        );
        assert_eq!(
            serde_message("invalid value: integer `77`, expected a port"),
            "invalid value: expected a port, found an integer"
        );
        assert_eq!(
            serde_message("unknown variant `hunter2`, expected `a` or `b`"),
            "unknown variant, expected `a` or `b`"
        );
        assert_eq!(
            serde_message("unknown field `auth_tokn`, expected one of `x`"),
            "unknown field `auth_tokn`, expected one of `x`"
        );
        assert!(!serde_message("something \"hunter2\"").contains("hunter2"));
    }

    #[test]
    fn keys_in_lists_keep_their_dots() {
        assert_eq!(dotted("relay.routes[0]from"), "relay.routes[0].from");
        assert_eq!(dotted("providers[1]"), "providers[1]");
        assert_eq!(dotted("a[0][1]b.c"), "a[0][1].b.c");
    }

    #[test]
    fn value_kinds() {
        assert_eq!(value_kind(r#"string "hunter2""#), "a string");
        assert_eq!(value_kind("64-bit unsigned integer `5`"), "an integer");
        assert_eq!(value_kind("floating point `1.5`"), "a number");
        assert_eq!(value_kind("sequence"), "a list");
        assert_eq!(value_kind("hunter2"), "a value of another kind");
    }

    #[test]
    fn yaml_messages_lose_the_quoted_character() {
        assert_eq!(
            unquoted("unexpected character: `@'"),
            "unexpected character"
        );
        assert_eq!(
            unquoted("while scanning a quoted scalar, found unexpected end of stream"),
            "while scanning a quoted scalar, found unexpected end of stream"
        );
    }
}
