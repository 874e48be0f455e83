//! Reading request bodies: the content type, a size bound that holds
//! whether or not the length was declared, and the forms Twilio signs.

use bytes::Bytes;
use http::{header, HeaderMap, Request};
use http_body_util::{BodyExt, Limited};
use hyper::body::Body;
use secrecy::{ExposeSecret, SecretString};

use crate::http::answer::ApiError;

/// Whether the single `Content-Type` has this essence (`application/json`,
/// optionally with parameters such as `; charset=utf-8`).
pub fn has_content_type(headers: &HeaderMap, essence: &str) -> bool {
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
/// was declared (chunked bodies are cut off as they pass the limit).
pub async fn read<B>(request: Request<B>, max: usize) -> Result<Bytes, ApiError>
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

/// Read a form Twilio (or SignalWire) posted and signed: the content type,
/// the body within `max` bytes, then `X-Twilio-Signature` (or its alias
/// `X-SignalWire-Signature`) over `url` and the parameters, keyed with
/// `token`. Nothing the form says is used before the signature holds.
pub async fn read_signed_form<B>(
    request: Request<B>,
    url: &str,
    token: &SecretString,
    max: usize,
) -> Result<Vec<(String, String)>, ApiError>
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    read_signed_form_by_any(request, url, std::slice::from_ref(token), max).await
}

/// As [`read_signed_form`], signed with any one of `tokens` (each provider
/// signs with its own key; `X-SignalWire-Signature` is read as well as
/// `X-Twilio-Signature`, the same algorithm under another name).
pub async fn read_signed_form_by_any<B>(
    request: Request<B>,
    url: &str,
    tokens: &[SecretString],
    max: usize,
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
    let signature = request
        .headers()
        .get("x-twilio-signature")
        .or_else(|| request.headers().get("x-signalwire-signature"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = read(request, max).await?;
    let params: Vec<(String, String)> = form_urlencoded::parse(&bytes)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let Some(signature) = signature else {
        return Err(ApiError::InvalidSignature);
    };
    // Every key is tried, so the time taken does not tell which matched.
    let mut valid = false;
    for token in tokens {
        valid |=
            crate::provider::signature::verify(token.expose_secret(), url, &params, &signature);
    }
    if !valid {
        return Err(ApiError::InvalidSignature);
    }
    Ok(params)
}

/// Read the body within `server.max_body_bytes` and
/// `server.body_read_timeout` (408 `request_timeout` past it).
pub async fn read_in_time<B>(
    request: Request<B>,
    server: &crate::config::ServerConfig,
) -> Result<Bytes, ApiError>
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    tokio::time::timeout(
        server.body_read_timeout,
        read(request, server.max_body_bytes),
    )
    .await
    .map_err(|_| ApiError::RequestTimeout)?
}

/// The body of a request authenticated like Kratos's courier requests
/// (the courier endpoints, Kratos's confirmations, the verify API):
/// credentials first, then a JSON body read by [`read_in_time`].
pub async fn read_authenticated_json<B>(
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
