//! Secrets: given inline or in a `_file` twin (the way container secrets are
//! mounted), never both; printed as `[redacted]`.
//!
//! An error about a secret names the key and, for a file, its path and the
//! I/O error, never a byte of the content.

use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::{Serialize, Serializer};

use super::error::{refuse_if, ConfigError};

/// A secret given inline or in a file, but not both.
pub(super) fn secret(
    key: &str,
    inline: Option<SecretString>,
    file: Option<PathBuf>,
) -> Result<Option<SecretString>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(ConfigError::invalid(
            key,
            format!("set either `{key}` or `{key}_file`, not both"),
        )),
        (Some(s), None) => Ok(Some(s)),
        (None, Some(path)) => read_secret_file(&format!("{key}_file"), &path).map(Some),
        (None, None) => Ok(None),
    }
}

fn read_secret_file(key: &str, path: &Path) -> Result<SecretString, ConfigError> {
    // An I/O error (including "not valid UTF-8") describes, never quotes.
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::invalid(key, format!("cannot read {}: {e}", path.display())))?;
    // Secret files usually end with a newline that is not part of the secret.
    let trimmed = text.trim_end_matches(['\n', '\r']);
    refuse_if(
        trimmed.is_empty(),
        key,
        format!("{} is empty", path.display()),
    )?;
    Ok(SecretString::from(trimmed.to_owned()))
}

pub(super) fn ser_redacted<S: Serializer>(_: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("[redacted]")
}

pub(super) fn ser_redacted_opt<S: Serializer>(
    v: &Option<SecretString>,
    s: S,
) -> Result<S::Ok, S::Error> {
    v.as_ref().map(|_| "[redacted]").serialize(s)
}

/// Every entry of a list of secrets, as `[redacted]`.
pub(super) fn ser_redacted_list<S: Serializer>(
    v: &[SecretString],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|_| "[redacted]"))
}
