//! What the sandbox remembers: accepted messages/calls and every request seen.

use serde::Serialize;

/// Which Twilio resource an accepted request created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// `POST .../Messages.json`
    Sms,
    /// `POST .../Calls.json`
    Voice,
}

/// One accepted message or call, as a developer wants to see it in the inbox.
#[derive(Debug, Clone, Serialize)]
pub struct InboxEntry {
    /// `SM...` or `CA...`, as answered to the client.
    pub sid: String,
    pub channel: Channel,
    pub to: String,
    /// The `From` parameter; for a message sent through a Messaging Service
    /// without `From`, the `MessagingServiceSid`.
    pub from: String,
    /// SMS body.
    pub body: Option<String>,
    /// Inline TwiML of a call.
    pub twiml: Option<String>,
    /// Text of the `<Say>` elements joined with " ".
    pub spoken_text: Option<String>,
    /// RFC 2822, as in Twilio's `date_created`.
    pub date_created: String,
    /// Status at creation, as answered (`queued`, `accepted` or `scheduled`).
    pub status: String,
    /// Decoded form parameters in wire order.
    pub form: Vec<(String, String)>,
}

/// One request to the Messages/Calls endpoints (a create or a list),
/// accepted or refused.
#[derive(Debug, Clone, Serialize)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Decoded query parameters in wire order (a list's `To`, `PageSize`...;
    /// usually empty for a create).
    pub query: Vec<(String, String)>,
    /// User part of HTTP Basic credentials, if any were sent (never the password).
    pub basic_user: Option<String>,
    pub content_type: Option<String>,
    /// Decoded form in wire order (empty when the body was not read or not a form).
    pub form: Vec<(String, String)>,
    /// HTTP status answered; 0 when the connection was dropped without an answer.
    pub answered_status: u16,
}
