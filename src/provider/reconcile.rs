//! Asking the provider whether it already has a message or call: after a
//! send timed out or broke once the request was written, the provider may
//! have it, and the next attempt asks before sending again
//! ([`TwilioClient::find_message`], [`TwilioClient::find_call`]).

use std::time::{Duration, SystemTime};

use time::format_description::well_known::Rfc2822;
use time::OffsetDateTime;

use crate::provider::twilio::{map_transport, read_bounded, rejected, ProviderError, TwilioClient};

impl TwilioClient {
    /// The sid of a message to `to` with exactly `body`, created at or after
    /// `since` (less [`RECONCILE_CLOCK_SKEW`]), if the provider has one.
    ///
    /// `since` is when the first attempt of the message was made. Lists
    /// `GET .../Messages.json?To=…&PageSize=…` newest first and compares
    /// `body` and `date_created` itself: a `DateSent` filter would miss a
    /// message still queued (it has no `date_sent` yet), and Twilio's date
    /// filters are whole days. `Ok(None)` means the provider does not have
    /// it and it may be sent; any error means the question is open (the
    /// caller must not send).
    ///
    /// With `code`, a message whose stored body differs but contains the
    /// code matches too: a Messaging Service's smart encoding, link
    /// shortening or a trial account's prefix change the text Twilio keeps.
    pub(crate) async fn find_message(
        &self,
        to: &str,
        body: &str,
        code: Option<&str>,
        since: SystemTime,
    ) -> Result<Option<String>, ProviderError> {
        let wanted = Wanted {
            to,
            from: None,
            body: Some(body),
            code,
        };
        self.find(&self.messages, Listing::Messages, &wanted, since)
            .await
    }

    /// The sid of a call to `to` (and from `from`, when given) created at or
    /// after `since` (less [`RECONCILE_CLOCK_SKEW`]), if the provider has
    /// one; see [`Self::find_message`].
    ///
    /// A call resource has no text to compare: any call to the number in
    /// that time counts, including one made for another message.
    pub(crate) async fn find_call(
        &self,
        to: &str,
        from: Option<&str>,
        since: SystemTime,
    ) -> Result<Option<String>, ProviderError> {
        let wanted = Wanted {
            to,
            from,
            body: None,
            code: None,
        };
        self.find(&self.calls, Listing::Calls, &wanted, since).await
    }

    async fn find(
        &self,
        resource: &reqwest::Url,
        listing: Listing,
        wanted: &Wanted<'_>,
        since: SystemTime,
    ) -> Result<Option<String>, ProviderError> {
        // Compared as nanoseconds since the epoch: no conversion can panic,
        // whatever `since` or the provider's dates are.
        let earliest = unix_nanos(since) - RECONCILE_CLOCK_SKEW.as_nanos() as i128;
        let mut url = resource.clone();
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("To", wanted.to);
            if let Some(from) = wanted.from {
                query.append_pair("From", from);
            }
            query.append_pair("PageSize", &RECONCILE_PAGE_SIZE.to_string());
        }
        let walk = async {
            for _ in 0..RECONCILE_MAX_PAGES {
                let page = self.list_page(&url, listing).await?;
                let mut oldest: Option<i128> = None;
                for item in &page.items {
                    let created = item
                        .date_created
                        .as_deref()
                        .and_then(|d| OffsetDateTime::parse(d, &Rfc2822).ok())
                        .ok_or(ProviderError::Unreadable)?
                        .unix_timestamp_nanos();
                    oldest = Some(oldest.map_or(created, |o| o.min(created)));
                    if created >= earliest && wanted.matches(item) {
                        return item
                            .sid
                            .clone()
                            .filter(|s| !s.is_empty() && s.len() <= 64)
                            .map(Some)
                            .ok_or(ProviderError::Unreadable);
                    }
                }
                // Newest first: once a page reaches back before `since`,
                // later pages are older still.
                match (page.next_page_uri, oldest) {
                    (Some(next), Some(oldest)) if oldest >= earliest => {
                        url = next_page(resource, &next)?;
                    }
                    _ => return Ok(None),
                }
            }
            Err(ProviderError::Inconclusive)
        };
        tokio::time::timeout(self.timeout, walk)
            .await
            .map_err(|_| ProviderError::Timeout)?
    }

    /// One page of a list: the items under `listing`'s key, and where the
    /// next page is.
    async fn list_page(
        &self,
        url: &reqwest::Url,
        listing: Listing,
    ) -> Result<ListedPage, ProviderError> {
        let mut request = self
            .http
            .get(url.clone())
            .header(http::header::AUTHORIZATION, self.authorization.clone())
            .header(http::header::ACCEPT, "application/json");
        if let Some(trace) = crate::telemetry::traces::outgoing_headers() {
            request = request.headers(trace);
        }
        let response = request.send().await.map_err(map_transport)?;
        if !response.status().is_success() {
            return Err(rejected(response).await);
        }
        let bytes = read_bounded(response, MAX_LIST_BYTES)
            .await
            .ok_or(ProviderError::Unreadable)?;
        let page: ListPage =
            serde_json::from_slice(&bytes).map_err(|_| ProviderError::Unreadable)?;
        let items = match listing {
            Listing::Messages => page.messages,
            Listing::Calls => page.calls,
        }
        .ok_or(ProviderError::Unreadable)?;
        Ok(ListedPage {
            items,
            next_page_uri: page.next_page_uri.filter(|n| !n.is_empty()),
        })
    }
}

/// How far before `since` an item may be dated and still be the attempt
/// being reconciled: the clock skew allowed between the clock that wrote
/// `since` (this service's wall clock, or Redis's for the Redis ledger) and
/// Twilio's. Twilio's `date_created` is truncated to whole seconds, and a
/// replica's clock can run ahead of Twilio's by more than that (an NTP
/// step not yet taken, a VM that resumed): a search from `since` itself
/// would then miss the message and it would be sent again. With this
/// margin a clock up to 2 minutes ahead still finds it.
///
/// The cost of the margin: an older message to the same number with the
/// same body (or, with the code known, containing the same code) sent in
/// those 2 minutes is taken for this one; it carries the same code, so
/// the recipient has it. A call has no text to compare: any call to the
/// number from the same caller id in the window counts, so a voice code
/// requested again within 2 minutes, whose first attempt was uncertain, is
/// taken as placed. Both happen only on the uncertain path (a timeout or
/// a broken connection), and the user can ask again; a clock ahead of
/// Twilio's sent every uncertain message twice.
pub(crate) const RECONCILE_CLOCK_SKEW: Duration = Duration::from_secs(120);
/// Items per page when reconciling: a number rarely gets more than a few
/// messages in a few seconds, so one page is almost always enough.
pub(crate) const RECONCILE_PAGE_SIZE: u32 = 20;
/// Pages read at most per reconciliation; past them the answer is
/// [`ProviderError::Inconclusive`], never "not found".
pub(crate) const RECONCILE_MAX_PAGES: usize = 3;
/// Largest list page read (a page of 20 Twilio messages is about 30 KiB).
const MAX_LIST_BYTES: usize = 1024 * 1024;

/// Which list is read, and so which key holds its items.
#[derive(Debug, Clone, Copy)]
enum Listing {
    Messages,
    Calls,
}

/// What a listed item must be to be the message or call looked for.
struct Wanted<'a> {
    to: &'a str,
    from: Option<&'a str>,
    body: Option<&'a str>,
    /// The one-time code, when known: a listed body containing it matches
    /// even when the provider changed the rest of the text.
    code: Option<&'a str>,
}

impl Wanted<'_> {
    fn matches(&self, item: &ListedItem) -> bool {
        let body_matches = |b: &str| {
            let listed = item.body.as_deref();
            listed == Some(b)
                || self
                    .code
                    .filter(|c| c.len() >= 4)
                    .is_some_and(|c| listed.is_some_and(|l| l.contains(c)))
        };
        item.to.as_deref() == Some(self.to)
            && self.from.is_none_or(|f| item.from.as_deref() == Some(f))
            && self.body.is_none_or(body_matches)
    }
}

/// Twilio's list envelope, only the parts read (`ListMessageResponse`,
/// `ListCallResponse`).
#[derive(serde::Deserialize)]
struct ListPage {
    messages: Option<Vec<ListedItem>>,
    calls: Option<Vec<ListedItem>>,
    next_page_uri: Option<String>,
}

/// A listed message or call, only the fields compared.
#[derive(serde::Deserialize)]
struct ListedItem {
    sid: Option<String>,
    to: Option<String>,
    from: Option<String>,
    body: Option<String>,
    date_created: Option<String>,
}

struct ListedPage {
    items: Vec<ListedItem>,
    next_page_uri: Option<String>,
}

/// `t` as signed nanoseconds since 1970 (negative before).
fn unix_nanos(t: SystemTime) -> i128 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => after.as_nanos() as i128,
        Err(before) => -(before.duration().as_nanos() as i128),
    }
}

/// Where `next_page_uri` (a path, as Twilio gives it) leads. Only the same
/// list on the same host is followed: the credentials go with the request,
/// and a provider must not be able to send them elsewhere.
fn next_page(resource: &reqwest::Url, next: &str) -> Result<reqwest::Url, ProviderError> {
    let url = resource.join(next).map_err(|_| ProviderError::Unreadable)?;
    if url.origin() != resource.origin() || url.path() != resource.path() {
        return Err(ProviderError::Unreadable);
    }
    Ok(url)
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod against_twilio;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_twilio_dates_and_compares_them_without_panicking() {
        let date = OffsetDateTime::parse("Wed, 18 Aug 2010 20:01:40 +0000", &Rfc2822)
            .expect("Twilio's date_created format");
        assert_eq!(date.unix_timestamp(), 1_282_161_700);
        let since = SystemTime::UNIX_EPOCH + Duration::from_secs(1_282_161_700);
        assert_eq!(unix_nanos(since), date.unix_timestamp_nanos());
        assert_eq!(
            unix_nanos(SystemTime::UNIX_EPOCH - Duration::from_secs(1)),
            -1_000_000_000
        );
        assert!(OffsetDateTime::parse("2010-08-18T20:01:40Z", &Rfc2822).is_err());
    }

    #[test]
    fn a_listed_item_matches_on_every_given_field() {
        let item = |to: &str, from: Option<&str>, body: Option<&str>| ListedItem {
            sid: Some("SM1".into()),
            to: Some(to.into()),
            from: from.map(Into::into),
            body: body.map(Into::into),
            date_created: None,
        };
        let sms = Wanted {
            to: "+1",
            from: None,
            body: Some("code 1"),
            code: None,
        };
        assert!(sms.matches(&item("+1", None, Some("code 1"))));
        // With the code known, a body the provider rewrote still matches.
        let coded = Wanted {
            to: "+1",
            from: None,
            body: Some("Your code is 482917"),
            code: Some("482917"),
        };
        assert!(coded.matches(&item(
            "+1",
            None,
            Some("Sent from your Twilio trial account - Your code is 482917")
        )));
        assert!(!coded.matches(&item("+1", None, Some("Your code is 111111"))));
        assert!(!sms.matches(&item("+1", None, Some("code 2"))));
        assert!(!sms.matches(&item("+2", None, Some("code 1"))));
        assert!(!sms.matches(&item("+1", None, None)));
        let call = Wanted {
            to: "+1",
            from: Some("+9"),
            body: None,
            code: None,
        };
        assert!(call.matches(&item("+1", Some("+9"), None)));
        assert!(!call.matches(&item("+1", Some("+8"), None)));
        assert!(!call.matches(&item("+1", None, None)));
    }
}
