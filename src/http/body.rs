//! Reading request bodies: the content type, and a size bound that holds
//! whether or not the length was declared.

use bytes::Bytes;
use http::{header, HeaderMap, Request};
use http_body_util::{BodyExt, Limited};
use hyper::body::Body;

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
