//! The outbound client for Twilio's 2010-04-01 REST API (and providers that
//! copy it, such as SignalWire's compatibility API).
//!
//! It owns the base URL, the credentials, the timeout and one pooled
//! `reqwest` client; callers hand it typed [`OutgoingSms`] / [`OutgoingCall`]
//! values and get back either the provider's acceptance or a
//! [`ProviderError`] that says whose problem the failure is.
//!
//! It also answers "does the provider already have this message?"
//! ([`TwilioClient::find_message`], [`TwilioClient::find_call`]): after a
//! send timed out or broke once the request was written, the provider may
//! have the message, and the next attempt asks before sending again.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::config::{SmsSender, TwilioConfig};
use crate::provider::errors::{self, FailureClass};

/// A message to create with `POST .../Messages.json`.
#[derive(Debug, Clone)]
pub struct OutgoingSms {
    pub to: String,
    pub sender: SmsSender,
    pub body: String,
    /// Seconds Twilio may keep trying (1..=36000).
    pub validity_period: Option<u32>,
    pub status_callback: Option<String>,
}

/// A call to create with `POST .../Calls.json`.
#[derive(Debug, Clone)]
pub struct OutgoingCall {
    pub to: String,
    pub from: String,
    pub twiml: String,
    pub status_callback: Option<String>,
}

impl OutgoingSms {
    /// The form fields, in the order they are sent.
    pub fn form(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![("To", self.to.clone())];
        match &self.sender {
            SmsSender::From(n) => f.push(("From", n.to_string())),
            SmsSender::MessagingServiceSid(s) => f.push(("MessagingServiceSid", s.clone())),
        }
        f.push(("Body", self.body.clone()));
        if let Some(v) = self.validity_period {
            f.push(("ValidityPeriod", v.to_string()));
        }
        if let Some(cb) = &self.status_callback {
            f.push(("StatusCallback", cb.clone()));
        }
        f
    }
}

impl OutgoingCall {
    pub fn form(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![
            ("To", self.to.clone()),
            ("From", self.from.clone()),
            ("Twiml", self.twiml.clone()),
        ];
        if let Some(cb) = &self.status_callback {
            f.push(("StatusCallback", cb.clone()));
            f.push(("StatusCallbackEvent", "completed".to_owned()));
        }
        f
    }
}

/// The provider accepted the message or call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// `SM…` / `CA…`; `None` when a 2xx came with a body we could not read
    /// (the message was accepted all the same, so it must not be resent).
    pub sid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("the provider refused the request (HTTP {status}, code {code:?})")]
    Rejected {
        status: u16,
        code: Option<u32>,
        retry_after: Option<u64>,
    },
    #[error("the provider did not answer in time")]
    Timeout,
    #[error("the provider could not be reached")]
    Connect,
    #[error("the connection to the provider failed")]
    Transport,
    /// A list answered 2xx but could not be read (not JSON, not a list,
    /// an item without a date or sid, a `next_page_uri` elsewhere): nothing
    /// can be concluded from it, so nothing may be resent on its strength.
    #[error("the provider's answer could not be read")]
    Unreadable,
    /// More recent items than [`RECONCILE_MAX_PAGES`] pages hold: whether
    /// the message is among the older ones is unknown.
    #[error("the provider's list is too long to reconcile")]
    Inconclusive,
}

impl ProviderError {
    /// Whose problem the failure is (see [`errors::classify`]).
    pub fn class(&self) -> FailureClass {
        match self {
            ProviderError::Rejected { status, code, .. } => errors::classify(*status, *code),
            ProviderError::Timeout
            | ProviderError::Connect
            | ProviderError::Transport
            | ProviderError::Unreadable
            | ProviderError::Inconclusive => FailureClass::Transient,
        }
    }

    /// Whether the provider may have the message although it did not say
    /// it accepted it: the request may have been written before the timeout
    /// or the broken connection, and a 500, 502 or 504 can come from Twilio
    /// or a gateway after the message was created. (A connect error, a 429
    /// and a 503 mean it was not processed.)
    pub fn may_have_been_sent(&self) -> bool {
        matches!(
            self,
            ProviderError::Timeout
                | ProviderError::Transport
                | ProviderError::Rejected {
                    status: 500 | 502 | 504,
                    ..
                }
        )
    }

    /// Twilio's error code, when it gave one.
    pub fn provider_code(&self) -> Option<u32> {
        match self {
            ProviderError::Rejected { code, .. } => *code,
            _ => None,
        }
    }

    /// The provider's `Retry-After`, when it gave one.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ProviderError::Rejected { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short, bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Rejected { .. } => "rejected",
            ProviderError::Timeout => "timeout",
            ProviderError::Connect => "connect",
            ProviderError::Transport => "transport",
            ProviderError::Unreadable => "unreadable",
            ProviderError::Inconclusive => "inconclusive",
        }
    }
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("twilio.base_url and twilio.account_sid do not make a URL: {0}")]
    Url(String),
}

/// The Twilio REST client.
#[derive(Clone)]
pub struct TwilioClient {
    pub(super) http: reqwest::Client,
    /// The three resources below `{base}/2010-04-01/Accounts/{sid}`, parsed
    /// once rather than on every send.
    pub(super) account_json: reqwest::Url,
    pub(super) messages: reqwest::Url,
    pub(super) calls: reqwest::Url,
    /// The whole of a reconciliation (every page it reads) is bounded by the
    /// same time as one request, so asking never costs more than sending.
    pub(super) timeout: Duration,
    /// `Basic base64(user:password)`, encoded once, marked sensitive so that
    /// hyper never logs or compresses it.
    pub(super) authorization: http::HeaderValue,
}

impl std::fmt::Debug for TwilioClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioClient")
            .field("account", &self.account_json.as_str())
            .finish_non_exhaustive()
    }
}

impl TwilioClient {
    pub fn new(config: &TwilioConfig) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(3)))
            // A redirected POST would silently become a GET: treat any 3xx
            // as the misconfiguration it is.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("kratos-phone-courier/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        let account_url = format!(
            "{}/2010-04-01/Accounts/{}",
            config.base_url, config.account_sid
        );
        let url = |suffix: &str| {
            reqwest::Url::parse(&format!("{account_url}{suffix}"))
                .map_err(|e| ClientError::Url(e.to_string()))
        };
        Ok(TwilioClient {
            http,
            account_json: url(".json")?,
            messages: url("/Messages.json")?,
            calls: url("/Calls.json")?,
            timeout: config.timeout,
            authorization: basic_authorization(&config.username, &config.password),
        })
    }

    pub async fn send_sms(&self, sms: &OutgoingSms) -> Result<Accepted, ProviderError> {
        self.create(&self.messages, &sms.form()).await
    }

    pub async fn create_call(&self, call: &OutgoingCall) -> Result<Accepted, ProviderError> {
        self.create(&self.calls, &call.form()).await
    }

    /// `GET /2010-04-01/Accounts/{sid}.json`: do the credentials work?
    pub async fn check_credentials(&self) -> Result<(), ProviderError> {
        let response = self
            .http
            .get(self.account_json.clone())
            .header(http::header::AUTHORIZATION, self.authorization.clone())
            .send()
            .await
            .map_err(map_transport)?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(rejected(response).await)
        }
    }

    async fn create(
        &self,
        resource: &reqwest::Url,
        form: &[(&'static str, String)],
    ) -> Result<Accepted, ProviderError> {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        let mut request = self
            .http
            .post(resource.clone())
            .header(http::header::AUTHORIZATION, self.authorization.clone())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json");
        // The provider call continues the trace (W3C traceparent).
        if let Some(trace) = crate::telemetry::traces::outgoing_headers() {
            request = request.headers(trace);
        }
        let response = request.body(body).send().await.map_err(map_transport)?;
        crate::telemetry::traces::record_status(response.status().as_u16());
        if !response.status().is_success() {
            return Err(rejected(response).await);
        }
        // The provider accepted the message; whatever the body says now, it
        // must not be sent again.
        // Only the sid is read: the rest of Twilio's resource is skipped
        // without being built.
        #[derive(serde::Deserialize)]
        struct Created<'a> {
            #[serde(borrow)]
            sid: Option<std::borrow::Cow<'a, str>>,
        }
        let body = response.bytes().await.unwrap_or_default();
        let sid = serde_json::from_slice::<Created<'_>>(&body)
            .ok()
            .and_then(|c| c.sid)
            .filter(|s| s.len() <= 64)
            .map(std::borrow::Cow::into_owned);
        Ok(Accepted { sid })
    }
}

/// `Basic base64(user:password)`, as reqwest's `basic_auth` would write it.
pub(crate) fn basic_authorization(user: &str, password: &SecretString) -> http::HeaderValue {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD
        .encode(format!("{user}:{}", password.expose_secret()));
    let mut value = http::HeaderValue::try_from(format!("Basic {encoded}"))
        .expect("base64 is always a valid header value");
    value.set_sensitive(true);
    value
}

pub(super) fn map_transport(e: reqwest::Error) -> ProviderError {
    if e.is_timeout() {
        ProviderError::Timeout
    } else if e.is_connect() {
        ProviderError::Connect
    } else {
        ProviderError::Transport
    }
}

pub(super) async fn rejected(response: reqwest::Response) -> ProviderError {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    // Read at most a bounded error body: a hostile or broken upstream must
    // not make us buffer without limit.
    let code = match read_bounded(response, 16 * 1024).await {
        Some(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("code").and_then(|c| c.as_u64()))
            .and_then(|c| u32::try_from(c).ok()),
        None => None,
    };
    ProviderError::Rejected {
        status,
        code,
        retry_after,
    }
}

pub(super) async fn read_bounded(mut response: reqwest::Response, max: usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        if out.len() + chunk.len() > max {
            return None;
        }
        out.extend_from_slice(&chunk);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_twilio_codes() {
        let r = |status, code| ProviderError::Rejected {
            status,
            code,
            retry_after: None,
        };
        for c in [21211, 21268, 21408, 21610, 21612, 21614] {
            assert_eq!(r(400, Some(c)).class(), FailureClass::Recipient);
        }
        assert_eq!(r(401, Some(20003)).class(), FailureClass::Configuration);
        assert_eq!(r(404, Some(20404)).class(), FailureClass::Configuration);
        assert_eq!(r(400, Some(21212)).class(), FailureClass::Configuration);
        assert_eq!(r(400, Some(21606)).class(), FailureClass::Configuration);
        assert_eq!(r(429, Some(20429)).class(), FailureClass::Transient);
        assert_eq!(r(400, Some(21611)).class(), FailureClass::Transient);
        assert_eq!(r(503, None).class(), FailureClass::Transient);
        assert_eq!(r(500, None).class(), FailureClass::Transient);
        assert_eq!(r(307, None).class(), FailureClass::Configuration);
        assert_eq!(ProviderError::Timeout.class(), FailureClass::Transient);
        assert_eq!(ProviderError::Connect.class(), FailureClass::Transient);
    }

    #[test]
    fn sms_form_order_and_fields() {
        let sms = OutgoingSms {
            to: "+14155550123".into(),
            sender: SmsSender::MessagingServiceSid("MG0123456789abcdef0123456789abcdef".into()),
            body: "Your code is 1 + 1".into(),
            validity_period: Some(3600),
            status_callback: None,
        };
        assert_eq!(
            sms.form(),
            vec![
                ("To", "+14155550123".to_owned()),
                (
                    "MessagingServiceSid",
                    "MG0123456789abcdef0123456789abcdef".to_owned()
                ),
                ("Body", "Your code is 1 + 1".to_owned()),
                ("ValidityPeriod", "3600".to_owned()),
            ]
        );
    }
}
