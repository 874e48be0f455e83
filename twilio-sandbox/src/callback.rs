//! Status callbacks: after accepting a request that names a `StatusCallback`,
//! Twilio POSTs signed, form-encoded status updates to it. The sandbox does
//! the same so the receiving side can be exercised end to end.

use tracing::{debug, warn};

use super::model::Channel;
use super::resources::API_VERSION;
use crate::signature;

/// Everything needed to report on one accepted message or call.
#[derive(Debug, Clone)]
pub(crate) struct CallbackJob {
    pub url: String,
    pub auth_token: String,
    pub account_sid: String,
    pub sid: String,
    pub channel: Channel,
    pub from: String,
    pub to: String,
    /// Report the message as `undelivered` with this `ErrorCode`.
    pub undelivered: Option<u32>,
    /// Report the message `sent`, and nothing after (no receipt).
    pub no_receipt: bool,
    /// The header the signature goes in (the sandbox's flavor).
    pub signature_header: &'static str,
}

/// The status updates Twilio would send, in order, as form pairs.
pub(crate) fn updates(job: &CallbackJob) -> Vec<Vec<(String, String)>> {
    let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    match job.channel {
        Channel::Sms => {
            let message = |status: &str, error: Option<u32>| {
                let mut form = vec![
                    pair("MessageSid", &job.sid),
                    pair("SmsSid", &job.sid),
                    pair("AccountSid", &job.account_sid),
                    pair("From", &job.from),
                    pair("To", &job.to),
                    pair("MessageStatus", status),
                    pair("SmsStatus", status),
                    pair("ApiVersion", API_VERSION),
                ];
                if let Some(code) = error {
                    form.push(pair("ErrorCode", &code.to_string()));
                }
                form
            };
            let last = match (job.undelivered, job.no_receipt) {
                (Some(code), _) => Some(message("undelivered", Some(code))),
                (None, true) => None,
                (None, false) => Some(message("delivered", None)),
            };
            std::iter::once(message("sent", None)).chain(last).collect()
        }
        Channel::Voice => vec![vec![
            pair("CallSid", &job.sid),
            pair("AccountSid", &job.account_sid),
            pair("From", &job.from),
            pair("To", &job.to),
            pair("CallStatus", "completed"),
            pair("ApiVersion", API_VERSION),
            pair("Direction", "outbound-api"),
            pair("CallDuration", "0"),
        ]],
    }
}

/// Send the updates one after another; a failure is logged and stops the
/// remaining updates (Twilio does not retry status callbacks either).
pub(crate) async fn deliver(client: reqwest::Client, job: CallbackJob) {
    for form in updates(&job) {
        let signature = signature::sign(&job.auth_token, &job.url, &form);
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter())
            .finish();
        let result = client
            .post(&job.url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header(job.signature_header, signature)
            .body(body)
            .send()
            .await;
        match result {
            Ok(response) if response.status().is_success() => {
                debug!(sid = %job.sid, status = %response.status(), "status callback delivered");
            }
            Ok(response) => {
                warn!(sid = %job.sid, status = %response.status(), "status callback refused");
                return;
            }
            Err(error) => {
                warn!(sid = %job.sid, error = %error.without_url(), "status callback failed");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(channel: Channel, undelivered: Option<u32>) -> CallbackJob {
        CallbackJob {
            url: "http://127.0.0.1:1/cb".into(),
            auth_token: "t".into(),
            account_sid: "AC1".into(),
            sid: "SM1".into(),
            channel,
            from: "+1".into(),
            to: "+2".into(),
            undelivered,
            no_receipt: false,
            signature_header: "X-Twilio-Signature",
        }
    }

    fn value<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
        form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    #[test]
    fn message_updates() {
        let updates = updates(&job(Channel::Sms, None));
        assert_eq!(updates.len(), 2);
        assert_eq!(value(&updates[0], "MessageStatus"), Some("sent"));
        assert_eq!(value(&updates[1], "SmsStatus"), Some("delivered"));
        assert_eq!(value(&updates[1], "ErrorCode"), None);
        let failed = super::updates(&job(Channel::Sms, Some(30003)));
        assert_eq!(value(&failed[1], "MessageStatus"), Some("undelivered"));
        assert_eq!(value(&failed[1], "ErrorCode"), Some("30003"));
        let mut silent = job(Channel::Sms, None);
        silent.no_receipt = true;
        let silent = super::updates(&silent);
        assert_eq!(silent.len(), 1);
        assert_eq!(value(&silent[0], "MessageStatus"), Some("sent"));
    }

    #[test]
    fn call_update() {
        let updates = updates(&job(Channel::Voice, None));
        assert_eq!(updates.len(), 1);
        assert_eq!(value(&updates[0], "CallStatus"), Some("completed"));
        assert_eq!(value(&updates[0], "Direction"), Some("outbound-api"));
    }
}
