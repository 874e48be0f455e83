//! Test numbers: configured recipients that are answered without sending,
//! with the message kept (body and code included: nothing real was sent) so
//! an operator's own CI can read it from `GET /v1/test-messages`.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::delivery::channel::Channel;
use crate::delivery::message::CourierMessage;
use crate::phone::E164;

/// How many test messages are kept; the oldest go first.
const KEPT: usize = 100;

/// A message to a test number.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct TestMessage {
    pub(crate) sid: String,
    pub(crate) to: String,
    pub(crate) channel: &'static str,
    pub(crate) template_type: &'static str,
    pub(crate) body: String,
    pub(crate) code: Option<String>,
}

pub(crate) struct TestNumbers {
    /// As configured.
    numbers: Vec<E164>,
    kept: Mutex<VecDeque<TestMessage>>,
}

impl TestNumbers {
    pub(crate) fn new(numbers: Vec<E164>) -> Self {
        TestNumbers {
            numbers,
            kept: Mutex::new(VecDeque::new()),
        }
    }

    /// The test number `recipient` is, if it is one (compared as written,
    /// surrounding white space aside).
    pub(crate) fn matching<'a>(&self, recipient: &'a str) -> Option<&'a str> {
        let trimmed = recipient.trim();
        self.numbers
            .iter()
            .any(|n| n.as_str() == trimmed)
            .then_some(trimmed)
    }

    /// Keep the message and return the made-up sid it is answered with.
    pub(crate) fn record(&self, to: &str, channel: Channel, message: &CourierMessage) -> String {
        let mut hex = [0u8; 16];
        rand::fill(&mut hex);
        let prefix = match channel {
            // Twilio's WhatsApp messages are message resources too.
            Channel::Sms | Channel::WhatsApp => "SM",
            Channel::Voice => "CA",
        };
        let sid = format!(
            "{prefix}{}",
            hex.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() >= KEPT {
            kept.pop_front();
        }
        kept.push_back(TestMessage {
            sid: sid.clone(),
            to: to.to_owned(),
            channel: channel.as_str(),
            template_type: message.template_type.label(),
            body: message.body.clone(),
            code: message.code.clone(),
        });
        sid
    }

    /// Messages to test numbers, newest first.
    pub(crate) fn messages(&self) -> Vec<TestMessage> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.iter().rev().cloned().collect()
    }
}
