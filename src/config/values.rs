//! The readers that check a value as it is read (ranges, durations, parsed
//! strings, lists, choices). A reader refuses with [`refused`]; the loader
//! names the key (`error::ConfigError::loading`).

use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where a reader's own reason starts, which the loader keeps as it is
/// (serde's messages may quote a value and are rewritten).
pub(super) const CHECKED: &str = "checked: ";

/// A value refused for `reason` ("must be between 1 and 6"), which names
/// what is allowed and never the value.
pub(super) fn refused<E: serde::de::Error>(reason: impl Display) -> E {
    E::custom(format!("{CHECKED}{reason}"))
}

/// What `MIN..=MAX` allows, in words.
pub(super) fn range_text(min: u64, max: u64) -> String {
    match (min, max) {
        (min, u64::MAX) => format!("must be at least {min}"),
        (0, max) => format!("must be at most {max}"),
        (min, max) => format!("must be between {min} and {max}"),
    }
}

/// An unbounded end of a range, for [`within`] and [`ms`].
pub(super) const ANY: u64 = u64::MAX;

/// An integer key from `MIN` to `MAX`:
/// `#[serde(deserialize_with = "within::<_, u32, 1, 100>")]`.
pub(super) fn within<'de, D, T, const MIN: u64, const MAX: u64>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    let v = u64::deserialize(d)?;
    match (MIN..=MAX).contains(&v) {
        true => T::try_from(v).map_err(|_| refused(range_text(MIN, MAX))),
        false => Err(refused(range_text(MIN, MAX))),
    }
}

/// A `_ms` key of `MIN` to `MAX` milliseconds, read as a [`Duration`].
pub(super) fn ms<'de, D: Deserializer<'de>, const MIN: u64, const MAX: u64>(
    d: D,
) -> Result<Duration, D::Error> {
    within::<D, u64, MIN, MAX>(d).map(Duration::from_millis)
}

/// A string parsed into its checked type (a number, a region, a tag); the
/// type's error says what is allowed.
pub(super) fn parsed<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: Display,
{
    let s = String::deserialize(d)?;
    s.parse().map_err(|e| refused(format!("is {e}")))
}

/// A list of parsed values, as an array or one comma-separated string.
pub(super) fn list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: Display,
{
    let items = StringList::deserialize(d)?.0;
    let parse = |s: &String| {
        s.parse()
            .map_err(|e| refused(format!("has an entry that is {e}")))
    };
    items.iter().map(parse).collect()
}

/// One of an enum's names, as its `#[serde(rename_all)]` spells them. The
/// `config` crate's own message for a name it does not know quotes the name
/// and lists none, so the string is read first and the enum from it.
pub(super) fn choice<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde::de::IntoDeserializer;
    let s = String::deserialize(d)?;
    T::deserialize(s.as_str().into_deserializer()).map_err(|e: serde::de::value::Error| {
        let text = e.to_string();
        let allowed = text
            .rsplit_once(", expected ")
            .map_or("another value", |(_, a)| a);
        refused(format!("must be {allowed}"))
    })
}

/// An `address:port`, or `None` for an empty string.
pub(super) fn addr<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<std::net::SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    match s.trim() {
        "" => Ok(None),
        a => a
            .parse()
            .map(Some)
            .map_err(|_| refused("is not an address:port such as 127.0.0.1:4470 or 0.0.0.0:4470")),
    }
}

/// A list given as a TOML/YAML array or, from an environment variable, as a
/// comma-separated string.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(transparent)]
pub struct StringList(pub Vec<String>);

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StringList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of strings or a comma-separated string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<StringList, E> {
                Ok(StringList(
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect(),
                ))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<StringList, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(StringList(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration printed in milliseconds, as the `_ms` key it was read from,
/// so `check-config` output can be pasted back into a file.
pub(super) fn ser_millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}
