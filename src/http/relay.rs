//! `POST /v1/twilio/inbound`, the relay's webhook at the HTTP edge: the
//! signature and the body are checked here ([`body::read_signed_form`]),
//! the fields read by `relay::inbound`, and the message handed to the
//! [`Relay`], which decides and forwards. Every decision is answered
//! `<Response/>`; a refused signature is 403 and nothing else happens.

use http::Request;
use hyper::body::Body;

use crate::delivery::error::DeliveryError;
use crate::http::answer::{Answer, ApiError};
use crate::http::body;
use crate::relay::{inbound, Relay};

/// An incoming-message webhook is a few KiB (a 1600-character body and
/// Twilio's location fields).
const MAX_WEBHOOK_BYTES: usize = 16 * 1024;

/// Check, parse, hand over, and answer Twilio at once.
pub(crate) async fn handle<B>(relay: &Relay, request: Request<B>) -> Answer
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let hook = relay.webhook();
    let form = body::SignedForm {
        url: hook.url,
        signer: hook.signer,
        keys: std::slice::from_ref(hook.token),
        max: MAX_WEBHOOK_BYTES,
        timeout: hook.body_timeout,
    };
    let message = body::read_signed_form(request, &form)
        .await
        .and_then(|params| inbound::parse(&params).ok_or(ApiError::InvalidWebhook));
    let message = match message {
        Ok(m) => m,
        Err(e) => {
            if matches!(e, ApiError::InvalidSignature) {
                relay.signature_refused();
            }
            return Answer::Error(e);
        }
    };
    match relay.receive(&message).await {
        Ok(()) => Answer::TwimlEmpty,
        Err(_) => Answer::Error(ApiError::Delivery(DeliveryError::StoreUnavailable)),
    }
}
