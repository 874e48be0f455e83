//! Reading request bodies: the content type, a size bound that holds
//! whether or not the length was declared, a time bound
//! (`server.body_read_timeout`) on every body an endpoint reads, and the
//! forms Twilio and SignalWire sign.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Request};
use http_body_util::{BodyExt, Limited};
use hyper::body::Body;
use secrecy::{ExposeSecret, SecretString};

use crate::config::ProviderKind;
use crate::http::answer::ApiError;

/// Whether the single `Content-Type` has this essence (`application/json`,
/// optionally with parameters such as `; charset=utf-8`).
pub(crate) fn has_content_type(headers: &HeaderMap, essence: &str) -> bool {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(v), None) = (values.next(), values.next()) else {
        return false;
    };
    let Ok(v) = v.to_str() else {
        return false;
    };
    v.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .eq_ignore_ascii_case(essence)
}

/// Read the body, refusing more than `max` bytes whether or not the length
/// was declared (chunked bodies are cut off as they pass the limit). Not
/// public: every endpoint reads through [`read_within`] or
/// [`read_in_time`], so none waits on a body without a time bound.
async fn read<B>(request: Request<B>, max: usize) -> Result<Bytes, ApiError>
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(ApiError::BodyTooLarge { limit: max });
    }
    match Limited::new(request.into_body(), max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::BodyTooLarge { limit: max })
        }
        Err(_) => Err(ApiError::BodyUnreadable),
    }
}

/// Which provider signed a webhook, and so which header is read first:
/// Twilio's posts carry `X-Twilio-Signature`; SignalWire's carry
/// `X-SignalWire-Signature`, with `X-Twilio-Signature` as its alias (the
/// same algorithm under Twilio's name). The other header is read when the
/// first is absent, so a SignalWire space configured as `[twilio]` (a
/// provider of kind `twilio`) still posts to its path. What makes a
/// signature count is the key, and each path takes only its own kind's
/// keys ([`SignedForm::keys`]): the header name grants nothing.
fn signature_header(headers: &HeaderMap, signer: ProviderKind) -> Option<String> {
    let twilio = headers.get("x-twilio-signature");
    let signalwire = headers.get("x-signalwire-signature");
    let found = match signer {
        ProviderKind::Twilio => twilio.or(signalwire),
        ProviderKind::SignalWire => signalwire.or(twilio),
    };
    found.and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// A form a provider posts and signs, and how to read it.
pub(crate) struct SignedForm<'a> {
    /// The exact URL the provider was given (and signs).
    pub(crate) url: &'a str,
    /// The kind of provider that posts here: only its signature header is
    /// read.
    pub(crate) signer: ProviderKind,
    /// The keys of the providers of that kind (Twilio: auth tokens,
    /// SignalWire: signing keys); a form signed with any one counts.
    pub(crate) keys: &'a [SecretString],
    /// The largest body accepted (413 past it).
    pub(crate) max: usize,
    /// The time the body has to arrive once the headers are in:
    /// `server.body_read_timeout` (408 `request_timeout` past it).
    pub(crate) timeout: Duration,
}

/// Read a form a provider posted and signed: the content type, the body
/// within `form.max` bytes and `form.timeout`, then the signature header
/// of `form.signer` (Twilio's HMAC-SHA1 over the URL and the parameters)
/// keyed with one of `form.keys`. Nothing the form says is used before the
/// signature holds.
pub(crate) async fn read_signed_form<B>(
    request: Request<B>,
    form: &SignedForm<'_>,
) -> Result<Vec<(String, String)>, ApiError>
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if !has_content_type(request.headers(), "application/x-www-form-urlencoded") {
        return Err(ApiError::UnsupportedMediaType {
            expected: "application/x-www-form-urlencoded",
        });
    }
    let signature = signature_header(request.headers(), form.signer);
    let bytes = read_within(request, form.max, form.timeout).await?;
    let params: Vec<(String, String)> = form_urlencoded::parse(&bytes)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let Some(signature) = signature else {
        return Err(ApiError::InvalidSignature);
    };
    // Every key is tried, so the time taken does not tell which matched.
    let mut valid = false;
    for key in form.keys {
        valid |=
            crate::provider::signature::verify(key.expose_secret(), form.url, &params, &signature);
    }
    if !valid {
        return Err(ApiError::InvalidSignature);
    }
    Ok(params)
}

/// Read the body within `max` bytes and `timeout` (408 `request_timeout`
/// past it): a client that declares a body and sends it slowly, or not at
/// all, gives up its connection instead of holding it.
pub(crate) async fn read_within<B>(
    request: Request<B>,
    max: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError>
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    tokio::time::timeout(timeout, read(request, max))
        .await
        .map_err(|_| ApiError::RequestTimeout)?
}

/// Read the body within `server.max_body_bytes` and
/// `server.body_read_timeout` (408 `request_timeout` past it).
pub(crate) async fn read_in_time<B>(
    request: Request<B>,
    server: &crate::config::ServerConfig,
) -> Result<Bytes, ApiError>
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    read_within(request, server.max_body_bytes, server.body_read_timeout).await
}

/// The body of a request authenticated like Kratos's courier requests
/// (the courier endpoints, Kratos's confirmations, the verify API):
/// credentials first, then a JSON body read by [`read_in_time`].
pub(crate) async fn read_authenticated_json<B>(
    request: Request<B>,
    auth: &crate::http::auth::Authenticator,
    server: &crate::config::ServerConfig,
) -> Result<Bytes, ApiError>
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if !auth.check(request.headers()) {
        return Err(ApiError::Unauthorized {
            basic_challenge: auth.uses_basic(),
        });
    }
    if !has_content_type(request.headers(), "application/json") {
        return Err(ApiError::UnsupportedMediaType {
            expected: "application/json",
        });
    }
    read_in_time(request, server).await
}
