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
//!
//! (Longer than our usual 400 lines, on purpose: one client of one REST
//! API: the forms it posts and the decoding of the answers sit together,
//! and about 200 of its lines are tests of that decoding.)

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::config::{SmsSender, TwilioConfig};
use crate::provider::errors::{self, FailureClass};

/// A message to create with `POST .../Messages.json`.
#[derive(Debug, Clone)]
pub(crate) struct OutgoingSms {
    pub(crate) to: String,
    pub(crate) sender: SmsSender,
    pub(crate) body: String,
    /// Seconds Twilio may keep trying (1..=36000).
    pub(crate) validity_period: Option<u32>,
    pub(crate) status_callback: Option<String>,
}

/// A WhatsApp template to create with `POST .../Messages.json`:
/// `whatsapp:` addresses, the template's `ContentSid` and its variable 1,
/// no `Body` (Meta fixes the text around the variable).
#[derive(Debug, Clone)]
pub(crate) struct OutgoingWhatsApp {
    /// E.164, without `whatsapp:` (the form adds it).
    pub(crate) to: String,
    pub(crate) sender: SmsSender,
    pub(crate) content_sid: String,
    /// Variable 1: the code (an authentication template), or a
    /// notification's text made fit for a variable (a utility template).
    pub(crate) variable: String,
    pub(crate) status_callback: Option<String>,
}

/// The prefix of a WhatsApp address in Twilio's `To` and `From`.
pub(crate) const WHATSAPP_PREFIX: &str = "whatsapp:";

impl OutgoingWhatsApp {
    /// The form fields, in the order they are sent.
    pub(crate) fn form(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![("To", self.address())];
        match &self.sender {
            SmsSender::From(n) => f.push(("From", format!("{WHATSAPP_PREFIX}{n}"))),
            SmsSender::MessagingServiceSid(s) => f.push(("MessagingServiceSid", s.clone())),
        }
        f.push(("ContentSid", self.content_sid.clone()));
        f.push((
            "ContentVariables",
            serde_json::json!({ "1": self.variable }).to_string(),
        ));
        if let Some(cb) = &self.status_callback {
            f.push(("StatusCallback", cb.clone()));
        }
        f
    }

    /// `whatsapp:+…`: the `To` Twilio lists the message under.
    pub(crate) fn address(&self) -> String {
        format!("{WHATSAPP_PREFIX}{}", self.to)
    }
}

/// A call to create with `POST .../Calls.json`.
#[derive(Debug, Clone)]
pub(crate) struct OutgoingCall {
    pub(crate) to: String,
    pub(crate) from: String,
    pub(crate) twiml: String,
    pub(crate) status_callback: Option<String>,
}

impl OutgoingSms {
    /// The form fields, in the order they are sent.
    pub(crate) fn form(&self) -> Vec<(&'static str, String)> {
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
    pub(crate) fn form(&self) -> Vec<(&'static str, String)> {
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
pub(crate) struct Accepted {
    /// `SM…` / `CA…`; `None` when a 2xx came with a body we could not read
    /// (the message was accepted all the same, so it must not be resent).
    pub(crate) sid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProviderError {
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
    pub(crate) fn class(&self) -> FailureClass {
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
    pub(crate) fn may_have_been_sent(&self) -> bool {
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

    /// Whether the failure counts toward the provider's circuit breaker: a
    /// transient failure (no connection, a timeout, a 5xx or 429, an
    /// unreadable answer), whether it answered a send or a reconciliation.
    /// A list too long to reconcile came from a provider that is up.
    pub(crate) fn counts_toward_circuit(&self) -> bool {
        self.class() == FailureClass::Transient && *self != ProviderError::Inconclusive
    }

    /// Twilio's error code, when it gave one.
    pub(crate) fn provider_code(&self) -> Option<u32> {
        match self {
            ProviderError::Rejected { code, .. } => *code,
            _ => None,
        }
    }

    /// The provider's `Retry-After`, when it gave one.
    pub(crate) fn retry_after(&self) -> Option<u64> {
        match self {
            ProviderError::Rejected { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short, bounded label for logs and metrics.
    pub(crate) fn kind(&self) -> &'static str {
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
pub(crate) struct TwilioClient {
    pub(super) http: reqwest::Client,
    /// The three resources below `{base}/2010-04-01/Accounts/{sid}`, parsed
    /// once rather than on every send.
    pub(super) account_json: reqwest::Url,
    pub(super) messages: reqwest::Url,
    pub(super) calls: reqwest::Url,
    /// The whole of a reconciliation (every page it reads) is bounded by the
    /// same time as one request, so asking never costs more than sending.
    pub(super) timeout: Duration,
    /// Connecting (DNS, TCP, TLS) may take this long, always less than
    /// `timeout`: see [`map_transport`].
    pub(super) connect_timeout: Duration,
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
    pub(crate) fn new(config: &TwilioConfig) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            // Shorter than `timeout` (the configuration checks it): a
            // connection that cannot be made ends at this, reported as a
            // connect error, before the request's own timeout can fire.
            .connect_timeout(config.connect_timeout)
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
            connect_timeout: config.connect_timeout,
            authorization: basic_authorization(&config.username, &config.password),
        })
    }

    pub(crate) async fn send_sms(&self, sms: &OutgoingSms) -> Result<Accepted, ProviderError> {
        self.send_sms_within(sms, self.timeout).await
    }

    #[cfg(test)]
    pub(crate) async fn create_call(&self, call: &OutgoingCall) -> Result<Accepted, ProviderError> {
        self.create_call_within(call, self.timeout).await
    }

    /// [`Self::send_sms`] with at most `limit` for the whole request
    /// (never more than the configured timeout; see [`Self::request_limit`]).
    pub(crate) async fn send_sms_within(
        &self,
        sms: &OutgoingSms,
        limit: Duration,
    ) -> Result<Accepted, ProviderError> {
        self.create(&self.messages, &sms.form(), limit).await
    }

    /// A WhatsApp template message, with at most `limit` for the whole
    /// request.
    pub(crate) async fn send_whatsapp_within(
        &self,
        message: &OutgoingWhatsApp,
        limit: Duration,
    ) -> Result<Accepted, ProviderError> {
        self.create(&self.messages, &message.form(), limit).await
    }

    /// [`Self::create_call`] with at most `limit` for the whole request.
    pub(crate) async fn create_call_within(
        &self,
        call: &OutgoingCall,
        limit: Duration,
    ) -> Result<Accepted, ProviderError> {
        self.create(&self.calls, &call.form(), limit).await
    }

    /// The least time a shortened request (a failover late in Kratos's
    /// request) may be given: the connect timeout and a second for the
    /// request itself. Less, and the request timeout could fire while still
    /// connecting, which reqwest reports as a plain timeout (uncertain).
    pub(crate) fn shortest_request(&self) -> Duration {
        self.connect_timeout + Duration::from_secs(1)
    }

    /// `limit`, kept within the configured timeout and above
    /// [`Self::shortest_request`].
    fn request_limit(&self, limit: Duration) -> Duration {
        limit
            .min(self.timeout)
            .max(self.shortest_request().min(self.timeout))
    }

    /// `GET /2010-04-01/Accounts/{sid}.json`: do the credentials work?
    pub(crate) async fn check_credentials(&self) -> Result<(), ProviderError> {
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
        limit: Duration,
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
            .header(http::header::ACCEPT, "application/json")
            .timeout(self.request_limit(limit));
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
        // Read with a bound: an answer larger than any Twilio resource (or
        // one that breaks off) is not buffered. The 2xx status already said
        // the provider has the message, so such an answer is an acceptance
        // whose sid is unknown (`sid: None`), never a failure: a failure
        // would make Kratos retry and the message be sent twice, and
        // "uncertain" would only ask the provider what its 2xx already said.
        let body = read_bounded(response, MAX_CREATE_ANSWER_BYTES)
            .await
            .unwrap_or_default();
        // Checked as UTF-8 once, so that serde_json does not check each key
        // again; an answer that is not UTF-8 is read as before (the values
        // skipped are not checked).
        let created = match std::str::from_utf8(&body) {
            Ok(text) => serde_json::from_str::<Created<'_>>(text).ok(),
            Err(_) => serde_json::from_slice::<Created<'_>>(&body).ok(),
        };
        let sid = created
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

/// What a failed request means for the message.
///
/// reqwest reports (0.12, `reqwest::Error`):
/// - `is_connect()` when the connector failed: DNS, the TCP connect, the
///   TLS handshake, and the client's `connect_timeout` (a timed-out connect
///   is a connect error whose source is a timeout, so `is_timeout()` is
///   true as well). No byte of the request was written: [`ProviderError::Connect`],
///   certainly not sent, whatever else it says. This is tested first.
/// - `is_timeout()` alone when the request's own timeout fired. reqwest
///   does not say in which phase; the connect timeout is always shorter
///   than the request's (the configuration and [`TwilioClient::request_limit`]
///   keep it so), so a connection still being made has failed as a connect
///   error before this can fire, and the request may have been written:
///   [`ProviderError::Timeout`], uncertain.
/// - anything else (a connection broken after it was made): uncertain.
pub(super) fn map_transport(e: reqwest::Error) -> ProviderError {
    if e.is_connect() {
        ProviderError::Connect
    } else if e.is_timeout() {
        ProviderError::Timeout
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
    let code = match read_bounded(response, MAX_ERROR_ANSWER_BYTES).await {
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

/// The largest create answer read: a Twilio message or call resource is
/// about 2 KiB.
pub(crate) const MAX_CREATE_ANSWER_BYTES: usize = 64 * 1024;
/// The largest error answer read (Twilio's are a few hundred bytes).
pub(crate) const MAX_ERROR_ANSWER_BYTES: usize = 16 * 1024;

/// The whole body, or `None` when it is longer than `max` bytes (by its
/// `Content-Length` or as it arrives) or breaks off: at most `max` bytes and
/// one chunk are ever held, and the rest is never read (dropping the
/// response closes the connection).
pub(crate) async fn read_bounded(mut response: reqwest::Response, max: usize) -> Option<Vec<u8>> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return None;
    }
    let mut out = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if out.len() + chunk.len() > max {
                    return None;
                }
                out.extend_from_slice(&chunk);
            }
            Ok(None) => return Some(out),
            Err(_) => return None,
        }
    }
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

    /// A client of `base` with these timeouts (ms).
    fn client(base: &str, timeout_ms: u64, connect_ms: u64) -> TwilioClient {
        TwilioClient::new(&TwilioConfig {
            base_url: base.to_owned(),
            account_sid: "AC0123456789abcdef0123456789abcdef".to_owned(),
            username: "AC0123456789abcdef0123456789abcdef".to_owned(),
            password: SecretString::from("token"),
            sms_sender: SmsSender::From(crate::phone::SenderId::parse("+15005550006").unwrap()),
            voice_from: None,
            timeout: Duration::from_millis(timeout_ms),
            connect_timeout: Duration::from_millis(connect_ms),
            verify_credentials_on_start: false,
            max_in_flight: 1,
            signing_token: None,
            whatsapp: crate::config::WhatsAppUse::Shared,
        })
        .unwrap()
    }

    fn sms() -> OutgoingSms {
        OutgoingSms {
            to: "+14155550123".into(),
            sender: SmsSender::From(crate::phone::SenderId::parse("+15005550006").unwrap()),
            body: "Your code is 482917".into(),
            validity_period: None,
            status_callback: None,
        }
    }

    /// A listener whose accept queue (backlog 1) is full of our own idle
    /// connections: further SYNs are dropped and a connect hangs. Returns
    /// it and the connections holding the queue.
    async fn syn_dropping_listener() -> (tokio::net::TcpListener, Vec<tokio::net::TcpStream>) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(1).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut held = Vec::new();
        for _ in 0..8 {
            let connect = tokio::net::TcpStream::connect(addr);
            match tokio::time::timeout(Duration::from_millis(300), connect).await {
                Ok(Ok(stream)) => held.push(stream),
                Ok(Err(e)) => panic!("{e}"),
                Err(_) => return (listener, held),
            }
        }
        panic!("the accept queue never filled");
    }

    #[tokio::test]
    async fn a_connect_timeout_is_not_sent_even_though_reqwest_calls_it_a_timeout() {
        let (listener, _held) = syn_dropping_listener().await;
        let base = format!("http://{}", listener.local_addr().unwrap());
        // What reqwest reports: a connect error whose source is a timeout.
        let e = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(100))
            .timeout(Duration::from_millis(2000))
            .build()
            .unwrap()
            .get(&base)
            .send()
            .await
            .unwrap_err();
        assert!(e.is_connect() && e.is_timeout(), "{e:?}");
        let e = map_transport(e);
        assert_eq!(e, ProviderError::Connect);
        assert!(!e.may_have_been_sent());
        // Through the client; and a request given less time than its
        // connect timeout still ends at the connect timeout (the request
        // timeout, which reqwest reports without a phase, cannot fire
        // first).
        let c = client(&base, 2000, 100);
        assert_eq!(c.send_sms(&sms()).await, Err(ProviderError::Connect));
        assert_eq!(
            c.send_sms_within(&sms(), Duration::from_millis(10)).await,
            Err(ProviderError::Connect)
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_not_sent() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let c = client(&format!("http://127.0.0.1:{port}"), 2000, 500);
        assert_eq!(c.send_sms(&sms()).await, Err(ProviderError::Connect));
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_not_sent() {
        // `.invalid` never resolves (RFC 2606): the DNS step of connecting.
        let c = client("http://api.twilio.invalid", 2000, 500);
        assert_eq!(c.send_sms(&sms()).await, Err(ProviderError::Connect));
    }

    #[tokio::test]
    async fn a_failed_tls_handshake_is_not_sent() {
        // Answers the TLS ClientHello with plain HTTP: the handshake fails
        // before any request could be written.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Ok((mut stream, _)) = listener.accept().await {
                let _ = stream
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let c = client(&format!("https://127.0.0.1:{port}"), 2000, 500);
        assert_eq!(c.send_sms(&sms()).await, Err(ProviderError::Connect));
    }

    #[tokio::test]
    async fn a_timeout_once_connected_is_uncertain() {
        // Accepts and reads, never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let got = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = got.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            while let Ok((mut stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        seen.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
                    }
                });
            }
        });
        let e = client(&base, 300, 150).send_sms(&sms()).await.unwrap_err();
        assert_eq!(e, ProviderError::Timeout);
        assert!(e.may_have_been_sent());
        assert!(
            got.load(std::sync::atomic::Ordering::SeqCst) > 0,
            "the request was written"
        );
    }

    #[tokio::test]
    async fn bodies_are_read_up_to_the_bound() {
        let answer = |body: Vec<u8>| reqwest::Response::from(http::Response::new(body));
        assert_eq!(
            read_bounded(answer(b"{}".to_vec()), 2).await.as_deref(),
            Some(&b"{}"[..])
        );
        assert_eq!(read_bounded(answer(vec![b'x'; 3]), 2).await, None);
    }

    #[test]
    fn whatsapp_form_has_addresses_template_and_code_and_no_body() {
        let m = OutgoingWhatsApp {
            to: "+5511987654321".into(),
            sender: SmsSender::From(crate::phone::SenderId::parse("+14155550100").unwrap()),
            content_sid: "HX0123456789abcdef0123456789abcdef".into(),
            variable: "482917".into(),
            status_callback: Some("https://c.example/v1/twilio/status".into()),
        };
        assert_eq!(
            m.form(),
            vec![
                ("To", "whatsapp:+5511987654321".to_owned()),
                ("From", "whatsapp:+14155550100".to_owned()),
                (
                    "ContentSid",
                    "HX0123456789abcdef0123456789abcdef".to_owned()
                ),
                ("ContentVariables", r#"{"1":"482917"}"#.to_owned()),
                (
                    "StatusCallback",
                    "https://c.example/v1/twilio/status".to_owned()
                ),
            ]
        );
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
