//! `[test_numbers]`: numbers answered without sending, for the operator's
//! own CI. A number is never quoted in an error.

use serde::Deserialize;

use super::error::ConfigError;
use super::phone_number::E164;
use super::values::StringList;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestNumbersSettings {
    pub numbers: StringList,
}

impl TestNumbersSettings {
    pub(super) fn check(self) -> Result<Vec<E164>, ConfigError> {
        self.numbers
            .0
            .iter()
            .map(|n| {
                E164::parse(n).ok_or_else(|| {
                    ConfigError::invalid(
                        "test_numbers.numbers",
                        "every test number must be in E.164 form",
                    )
                })
            })
            .collect()
    }
}
