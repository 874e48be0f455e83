//! (Past 400 lines only by its tests of Twilio's paging.)
//!
//! `GET .../Messages.json` and `GET .../Calls.json`: what the sandbox
//! accepted, newest first, in Twilio's paging envelope (`ListMessageResponse`
//! / `ListCallResponse` of the OpenAPI description).
//!
//! Clients use it to reconcile an uncertain send (a timeout after the request
//! was written): before sending again they ask whether the message exists.
//! Each item is rendered exactly as the create request's 201 answer was.
//!
//! Filters: `To` and `From` (exact match after form decoding, so `+` must
//! arrive as `%2B`; an empty value filters nothing, as Twilio treats `To=`
//! as missing). Paging: `PageSize` (1..=1000, default 50), `Page` (the page
//! index, echoed in `page`/`start`/`end`) and `PageToken`. A token is `PA`
//! (the page after) or `PB` (the page before) followed by the SID at the edge
//! of the page that produced it, Twilio's own shape; anchoring on a SID
//! rather than an offset keeps pages stable while new messages arrive in
//! front. Twilio's date and status filters are refused with 400 rather than
//! ignored: a silently unfiltered list would tell a test the wrong thing.

use http::StatusCode;
use serde_json::{json, Value};

use super::answers::*;
use super::auth;
use super::error::TwilioError;
use super::model::{Channel, InboxEntry};
use super::resources;
use super::validate::param;
use super::State;

/// Twilio's default page size.
const DEFAULT_PAGE_SIZE: usize = 50;
/// Twilio's largest page size.
const MAX_PAGE_SIZE: usize = 1000;

/// Filters Twilio offers on these lists that the sandbox does not implement.
const UNSUPPORTED: &[&str] = &[
    "DateSent",
    "DateSent<",
    "DateSent>",
    "Status",
    "ParentCallSid",
    "StartTime",
    "StartTime<",
    "StartTime>",
    "EndTime",
    "EndTime<",
    "EndTime>",
];

/// Where a page starts.
#[derive(Debug, PartialEq, Eq)]
enum Anchor {
    /// No token: `Page * PageSize` entries from the newest.
    Offset,
    /// `PA{sid}`: the entries older than `sid`.
    After(String),
    /// `PB{sid}`: the entries newer than `sid` (the last `PageSize` of them).
    Before(String),
}

/// The query of a list request, checked.
#[derive(Debug)]
struct ListQuery {
    to: Option<String>,
    from: Option<String>,
    page_size: usize,
    page: usize,
    token: Option<String>,
    anchor: Anchor,
}

impl ListQuery {
    fn parse(query: &[(String, String)]) -> Result<Self, TwilioError> {
        if let Some((name, _)) = query
            .iter()
            .find(|(k, _)| UNSUPPORTED.contains(&k.as_str()))
        {
            return Err(TwilioError::invalid_parameter(format!(
                "the sandbox does not implement the {name} filter (only To, From, PageSize, Page, PageToken)"
            )));
        }
        let first = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let page_size = match first("PageSize") {
            None => DEFAULT_PAGE_SIZE,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => n,
                _ => {
                    return Err(TwilioError::invalid_parameter(format!(
                        "PageSize must be an integer from 1 to {MAX_PAGE_SIZE}"
                    )))
                }
            },
        };
        let page = match first("Page") {
            None => 0,
            Some(v) => v.parse::<usize>().map_err(|_| {
                TwilioError::invalid_parameter("Page must be a non-negative integer")
            })?,
        };
        let token = first("PageToken").filter(|t| !t.is_empty()).cloned();
        let anchor = match &token {
            None => Anchor::Offset,
            Some(token) => parse_token(token)
                .ok_or_else(|| TwilioError::invalid_parameter("Invalid PageToken"))?,
        };
        Ok(Self {
            to: param(query, "To").map(str::to_owned),
            from: param(query, "From").map(str::to_owned),
            page_size,
            page,
            token,
            anchor,
        })
    }

    /// The query string of a page: the filters, `PageSize`, `Page` and, when
    /// given, `PageToken` (Twilio's order).
    fn uri(&self, path: &str, page: usize, token: Option<&str>) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(to) = &self.to {
            query.append_pair("To", to);
        }
        if let Some(from) = &self.from {
            query.append_pair("From", from);
        }
        query.append_pair("PageSize", &self.page_size.to_string());
        query.append_pair("Page", &page.to_string());
        if let Some(token) = token {
            query.append_pair("PageToken", token);
        }
        format!("{path}?{}", query.finish())
    }

    fn matches(&self, entry: &InboxEntry) -> bool {
        // The resource's `from` (as rendered): a message sent through a
        // Messaging Service without `From` has none.
        self.to.as_deref().is_none_or(|to| entry.to == to)
            && self
                .from
                .as_deref()
                .is_none_or(|from| param(&entry.form, "From") == Some(from))
    }
}

/// `PA` or `PB`, then a SID: two letters and 32 hex digits.
fn parse_token(token: &str) -> Option<Anchor> {
    let (kind, sid) = (token.get(..2)?, token.get(2..)?);
    let twilio = sid.len() == 34
        && sid.is_ascii()
        && sid[..2].bytes().all(|b| b.is_ascii_uppercase())
        && sid[2..].bytes().all(|b| b.is_ascii_hexdigit());
    // A SignalWire sid: a UUID.
    let uuid = sid.len() == 36
        && sid.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    let well_formed = twilio || uuid;
    if !well_formed {
        return None;
    }
    match kind {
        "PA" => Some(Anchor::After(sid.to_owned())),
        "PB" => Some(Anchor::Before(sid.to_owned())),
        _ => None,
    }
}

/// `GET .../Messages.json` or `GET .../Calls.json`.
pub(crate) fn list(
    state: &State,
    parts: &http::request::Parts,
    query: &[(String, String)],
    account_sid: &str,
    channel: Channel,
    credentials: Option<&auth::Credentials>,
) -> Answer {
    let config = &state.config;
    if !auth::authorized(credentials, &config.account_sid, &config.auth_token) {
        return error(&TwilioError::authenticate());
    }
    if account_sid != config.account_sid {
        return error(&TwilioError::not_found(parts.uri.path()));
    }
    let query = match ListQuery::parse(query) {
        Ok(query) => query,
        Err(refusal) => return error(&refusal),
    };
    let inbox = state.inbox.newest_first();
    json(
        StatusCode::OK,
        &envelope(
            &config.account_sid,
            parts.uri.path(),
            channel,
            &query,
            &inbox,
        ),
    )
}

/// The page `query` asks for out of `inbox` (newest first, both channels).
fn envelope(
    account_sid: &str,
    path: &str,
    channel: Channel,
    query: &ListQuery,
    inbox: &[InboxEntry],
) -> Value {
    // Positions in the whole inbox, so a token's SID can be placed even when
    // it does not pass this request's filters.
    let candidates: Vec<(usize, &InboxEntry)> = inbox
        .iter()
        .enumerate()
        .filter(|(_, e)| e.channel == channel && query.matches(e))
        .collect();
    let position = |sid: &str| inbox.iter().position(|e| e.sid == sid);
    let size = query.page_size;
    let selected: &[(usize, &InboxEntry)] = match &query.anchor {
        Anchor::Offset => {
            let start = query.page.saturating_mul(size).min(candidates.len());
            let end = start.saturating_add(size).min(candidates.len());
            &candidates[start..end]
        }
        // A SID no longer in the inbox was dropped as one of the oldest (or
        // cleared): nothing is older than it, everything left is newer.
        Anchor::After(sid) => {
            let older = match position(sid) {
                Some(at) => candidates.partition_point(|(i, _)| *i <= at),
                None => candidates.len(),
            };
            let end = older.saturating_add(size).min(candidates.len());
            &candidates[older..end]
        }
        Anchor::Before(sid) => {
            let newer = match position(sid) {
                Some(at) => candidates.partition_point(|(i, _)| *i < at),
                None => candidates.len(),
            };
            &candidates[newer.saturating_sub(size)..newer]
        }
    };
    let items: Vec<Value> = selected
        .iter()
        .map(|(_, e)| render(account_sid, e))
        .collect();
    let next_page_uri = selected.last().and_then(|(last, e)| {
        candidates.iter().any(|(i, _)| i > last).then(|| {
            query.uri(
                path,
                query.page.saturating_add(1),
                Some(&format!("PA{}", e.sid)),
            )
        })
    });
    let previous_page_uri = selected.first().and_then(|(first, e)| {
        candidates.iter().any(|(i, _)| i < first).then(|| {
            query.uri(
                path,
                query.page.saturating_sub(1),
                Some(&format!("PB{}", e.sid)),
            )
        })
    });
    let start = query.page.saturating_mul(size);
    let key = match channel {
        Channel::Sms => "messages",
        Channel::Voice => "calls",
    };
    json!({
        key: items,
        "end": start + selected.len().saturating_sub(1),
        "first_page_uri": query.uri(path, 0, None),
        "next_page_uri": next_page_uri,
        "page": query.page,
        "page_size": size,
        "previous_page_uri": previous_page_uri,
        "start": start,
        "uri": query.uri(path, query.page, query.token.as_deref()),
    })
}

/// An item exactly as the create request's 201 answer rendered it: the
/// inbox keeps everything that answer was made of.
fn render(account_sid: &str, entry: &InboxEntry) -> Value {
    match entry.channel {
        Channel::Sms => resources::message_json(
            account_sid,
            &entry.sid,
            &entry.date_created,
            &entry.status,
            &entry.form,
        ),
        Channel::Voice => {
            resources::call_json(account_sid, &entry.sid, &entry.date_created, &entry.form)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: usize, channel: Channel, to: &str) -> InboxEntry {
        let prefix = match channel {
            Channel::Sms => "SM",
            Channel::Voice => "CA",
        };
        InboxEntry {
            sid: format!("{prefix}{n:032x}"),
            channel,
            to: to.to_owned(),
            from: "+15005550006".to_owned(),
            body: Some(format!("body {n}")),
            twiml: None,
            spoken_text: None,
            date_created: "Thu, 01 Jan 2026 00:00:00 +0000".to_owned(),
            status: "queued".to_owned(),
            form: vec![
                ("To".to_owned(), to.to_owned()),
                ("From".to_owned(), "+15005550006".to_owned()),
                ("Body".to_owned(), format!("body {n}")),
            ],
        }
    }

    fn query(pairs: &[(&str, &str)]) -> Result<ListQuery, TwilioError> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ListQuery::parse(&owned)
    }

    fn sids(page: &Value, key: &str) -> Vec<String> {
        page[key]
            .as_array()
            .expect("items")
            .iter()
            .map(|m| m["sid"].as_str().expect("sid").to_owned())
            .collect()
    }

    #[test]
    fn parses_and_refuses_parameters() {
        let q = query(&[]).expect("empty");
        assert_eq!((q.page_size, q.page, q.anchor), (50, 0, Anchor::Offset));
        assert!(query(&[("PageSize", "1000")]).is_ok());
        for bad in [
            &[("PageSize", "0")][..],
            &[("PageSize", "1001")],
            &[("PageSize", "ten")],
            &[("PageSize", "-1")],
            &[("Page", "-1")],
            &[("PageToken", "PAnotasid")],
            &[("PageToken", "PXSM00000000000000000000000000000000")],
            &[("DateSent>", "2026-01-01")],
            &[("Status", "queued")],
        ] {
            let refusal = query(bad).expect_err(&format!("{bad:?}"));
            assert_eq!((refusal.status, refusal.code), (400, 20001), "{bad:?}");
        }
        let q = query(&[("PageToken", "PBSM0123456789abcdef0123456789abcdef")]).expect("token");
        assert_eq!(
            q.anchor,
            Anchor::Before("SM0123456789abcdef0123456789abcdef".into())
        );
        // Empty filters filter nothing.
        let q = query(&[("To", ""), ("From", "")]).expect("empty filters");
        assert!(q.to.is_none() && q.from.is_none());
    }

    #[test]
    fn tokens_anchor_on_sids_and_survive_new_arrivals() {
        // Newest first: 5, 4, 3, 2, 1.
        let mut inbox: Vec<InboxEntry> = (1..=5)
            .rev()
            .map(|n| entry(n, Channel::Sms, "+1"))
            .collect();
        let q = query(&[("PageSize", "2")]).expect("query");
        let first = envelope("AC", "/p", Channel::Sms, &q, &inbox);
        assert_eq!(
            sids(&first, "messages"),
            [
                entry(5, Channel::Sms, "+1").sid,
                entry(4, Channel::Sms, "+1").sid
            ]
        );
        assert!(first["previous_page_uri"].is_null());
        let next = first["next_page_uri"].as_str().expect("next").to_owned();
        assert_eq!(
            next,
            format!(
                "/p?PageSize=2&Page=1&PageToken=PA{}",
                entry(4, Channel::Sms, "+1").sid
            )
        );

        // A new message arrives in front: the next page is still 3, 2.
        inbox.insert(0, entry(6, Channel::Sms, "+1"));
        let token = next.split("PageToken=").nth(1).expect("token");
        let q = query(&[("PageSize", "2"), ("Page", "1"), ("PageToken", token)]).expect("query");
        let second = envelope("AC", "/p", Channel::Sms, &q, &inbox);
        assert_eq!(
            sids(&second, "messages"),
            [
                entry(3, Channel::Sms, "+1").sid,
                entry(2, Channel::Sms, "+1").sid
            ]
        );
        assert_eq!(
            (second["start"].as_u64(), second["end"].as_u64()),
            (Some(2), Some(3))
        );
        let previous = second["previous_page_uri"].as_str().expect("previous");
        let token = previous.split("PageToken=").nth(1).expect("token");
        let q = query(&[("PageSize", "2"), ("PageToken", token)]).expect("query");
        let back = envelope("AC", "/p", Channel::Sms, &q, &inbox);
        assert_eq!(
            sids(&back, "messages"),
            [
                entry(5, Channel::Sms, "+1").sid,
                entry(4, Channel::Sms, "+1").sid
            ]
        );

        // The anchor dropped from the bounded inbox: nothing is older.
        let q = query(&[(
            "PageToken",
            &format!("PA{}", entry(99, Channel::Sms, "+1").sid),
        )])
        .expect("query");
        let gone = envelope("AC", "/p", Channel::Sms, &q, &inbox);
        assert_eq!(gone["messages"], json!([]));
        assert!(gone["next_page_uri"].is_null() && gone["previous_page_uri"].is_null());
        assert_eq!(gone["end"], 0);
    }

    #[test]
    fn filters_by_channel_and_numbers() {
        let inbox = vec![
            entry(3, Channel::Voice, "+1"),
            entry(2, Channel::Sms, "+2"),
            entry(1, Channel::Sms, "+1"),
        ];
        let q = query(&[("To", "+1")]).expect("query");
        let page = envelope("AC", "/p", Channel::Sms, &q, &inbox);
        assert_eq!(sids(&page, "messages"), [entry(1, Channel::Sms, "+1").sid]);
        assert!(page.get("calls").is_none());
        let page = envelope("AC", "/p", Channel::Voice, &q, &inbox);
        assert_eq!(sids(&page, "calls"), [entry(3, Channel::Voice, "+1").sid]);
        let q = query(&[("From", "+19999999999")]).expect("query");
        let page = envelope("AC", "/p", Channel::Sms, &q, &inbox);
        assert_eq!(page["messages"], json!([]));
    }
}
