//! A fake Twilio that speaks Twilio's wire format.
//!
//! It is the out-of-the-box provider (`serve --dev`), the mock in integration
//! tests and the target of benchmarks. It checks requests the way Twilio does
//! (HTTP Basic, form encoding, the published request schema, size limits,
//! Twilio's magic test numbers), answers with Twilio-shaped JSON, keeps what it
//! accepted in a bounded inbox, sends signed status callbacks, and can be told
//! to misbehave (latency, 5xx, 429, dropped or broken connections, an
//! accepted message whose answer comes too late). It lists what it accepted
//! (`GET .../Messages.json`, `.../Calls.json`) the way Twilio does, so clients
//! can reconcile an uncertain send.
//!
//! It answers Twilio Lookup v2 (`GET /v2/PhoneNumbers/{E.164}`) with
//! magic numbers for each line type, a swapped SIM, a high SMS-pumping
//! score and a failing lookup (`lookup`), listed at
//! `/sandbox/lookups.json`.
//!
//! It also plays the other side of the service's inbound relay: it posts
//! signed incoming-message webhooks (`POST /sandbox/inbound`) and stands in
//! for Slack and webhook receivers (`/sandbox/slack/{name}`,
//! `/sandbox/webhooks/{name}`), recording what they were sent.
//!
//! The inbox, request log and fault endpoints have no authentication: this is
//! a local development tool and must not be exposed beyond the machine.

mod admin;
mod answers;
mod auth;
mod body;
mod callback;
mod create;
mod error;
mod fault;
mod flavor;
mod hooks;
mod html;
mod inbound;
mod list;
pub mod lookup;
mod mask;
mod model;
mod resources;
mod server;
pub mod signature;
mod store;
mod twiml;
mod validate;

use std::sync::Arc;
use std::time::Duration;

pub use error::TwilioError;
pub use fault::{Fault, UnknownFault};
pub use flavor::{Flavor, UnknownFlavor, SIGNALWIRE_PROJECT_ID};
pub use hooks::{HookEntry, HookKind};
pub use inbound::{InboundError, InboundSent, InboundSms};
pub use lookup::LookupEntry;
pub use model::{Channel, InboxEntry, RecordedRequest};

use fault::FaultQueue;
use store::Bounded;

/// How the sandbox identifies the one account it serves.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The only AccountSid the sandbox serves (path); others answer 404 / 20404.
    pub account_sid: String,
    /// HTTP Basic password. The user is `account_sid` or any API key SID
    /// (`SK` + 32 hex); the sandbox accepts the auth token as every key's secret.
    pub auth_token: String,
    /// Bound of the inbox and of the request log; the oldest entries go first.
    pub inbox_capacity: usize,
    /// Twilio, or a SignalWire space (paths, sids, signature header).
    pub flavor: Flavor,
}

impl SandboxConfig {
    /// The fixed development account SID.
    pub const DEFAULT_ACCOUNT_SID: &'static str = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    /// The fixed development auth token.
    pub const DEFAULT_AUTH_TOKEN: &'static str = "sandbox-auth-token";
    pub const DEFAULT_INBOX_CAPACITY: usize = 1000;
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            account_sid: Self::DEFAULT_ACCOUNT_SID.to_owned(),
            auth_token: Self::DEFAULT_AUTH_TOKEN.to_owned(),
            inbox_capacity: Self::DEFAULT_INBOX_CAPACITY,
            flavor: Flavor::Twilio,
        }
    }
}

impl SandboxConfig {
    /// A SignalWire space for development: its project id, the same token.
    pub fn signalwire() -> Self {
        Self {
            account_sid: SIGNALWIRE_PROJECT_ID.to_owned(),
            flavor: Flavor::SignalWire,
            ..Self::default()
        }
    }
}

/// How long one status callback POST may take.
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(5);

impl State {
    pub(crate) fn inbound_url(&self) -> Option<String> {
        self.inbound_url
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Shared state behind every clone of a [`Sandbox`].
#[derive(Debug)]
pub(crate) struct State {
    config: SandboxConfig,
    inbox: Bounded<InboxEntry>,
    requests: Bounded<RecordedRequest>,
    faults: FaultQueue,
    /// Posts to the Slack stand-in and the webhook receiver (`hooks`).
    hooks: Bounded<HookEntry>,
    /// Lookup v2 requests answered (`lookup`), numbers masked.
    lookups: Bounded<lookup::LookupEntry>,
    /// Faults for those posts, apart from the Twilio API's.
    hook_faults: hooks::HookFaults,
    /// Where incoming-message webhooks go, and the URL they are signed for
    /// (`inbound`); `None` until set.
    inbound_url: std::sync::Mutex<Option<String>>,
    /// `None` when the HTTP client could not be built; callbacks are then
    /// skipped with a warning instead of panicking.
    callback_client: Option<reqwest::Client>,
}

/// A running or ready-to-run Twilio sandbox. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct Sandbox {
    state: Arc<State>,
}

impl Sandbox {
    pub fn new(config: SandboxConfig) -> Self {
        if let Err(error) = validate::preload() {
            tracing::error!(%error, "request schemas did not compile; create requests will answer 500");
        }
        let callback_client = reqwest::Client::builder()
            .timeout(CALLBACK_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("TwilioProxy/1.1 (kratos-phone-courier sandbox)")
            .build()
            .map_err(|error| tracing::warn!(%error, "no HTTP client; status callbacks disabled"))
            .ok();
        let capacity = config.inbox_capacity;
        Self {
            state: Arc::new(State {
                config,
                inbox: Bounded::new(capacity),
                requests: Bounded::new(capacity),
                faults: FaultQueue::default(),
                hooks: Bounded::new(capacity),
                lookups: Bounded::new(capacity),
                hook_faults: hooks::HookFaults::default(),
                inbound_url: std::sync::Mutex::new(None),
                callback_client,
            }),
        }
    }

    /// The configuration this sandbox serves.
    pub fn config(&self) -> &SandboxConfig {
        &self.state.config
    }

    /// Serve on an already bound listener until `shutdown` completes (graceful: in-flight requests finish).
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        server::serve(self.state.clone(), listener, shutdown).await
    }

    /// Accepted messages and calls, newest first.
    pub fn inbox(&self) -> Vec<InboxEntry> {
        self.state.inbox.newest_first()
    }

    /// Every request to the Messages/Calls endpoints (creates and lists,
    /// accepted or refused), oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests.oldest_first()
    }

    /// Empties the inbox, the request log, the relay posts and the lookups.
    pub fn clear(&self) {
        self.state.inbox.clear();
        self.state.requests.clear();
        self.state.hooks.clear();
        self.state.lookups.clear();
    }

    /// Lookup v2 requests answered (numbers masked), oldest first.
    pub fn lookups(&self) -> Vec<LookupEntry> {
        self.state.lookups.oldest_first()
    }

    /// Where `POST /sandbox/inbound` sends incoming-message webhooks (the
    /// service's `{relay.public_url}/v1/twilio/inbound`), and the URL it
    /// signs, as Twilio signs the URL configured on the number.
    pub fn set_inbound_url(&self, url: impl Into<String>) {
        *self
            .state
            .inbound_url
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(url.into());
    }

    /// Send a signed incoming-message webhook, as Twilio would for a text
    /// arriving at `sms.to`.
    pub async fn send_inbound(&self, sms: InboundSms) -> Result<InboundSent, InboundError> {
        inbound::send(&self.state, sms).await
    }

    /// Posts the Slack stand-in and the webhook receiver answered, oldest
    /// first.
    pub fn hooks(&self) -> Vec<HookEntry> {
        self.state.hooks.oldest_first()
    }

    /// The next `count` posts to the Slack stand-in or the webhook
    /// receiver called `name` (any, with `None`) get this fault.
    pub fn inject_hook_fault(&self, name: Option<&str>, fault: Fault, count: usize) {
        self.state
            .hook_faults
            .push(name.map(str::to_owned), fault, count);
    }

    /// The next `count` create requests get this fault (after any already queued).
    pub fn inject_fault(&self, fault: Fault, count: usize) {
        self.state.faults.push(fault, count);
    }

    /// From now on, one create request in every `period` gets this fault
    /// (the next one first, after any queued), until cleared: `period` 2
    /// fails every other request. Replaces an earlier standing fault; a
    /// period of 0 removes it.
    pub fn fail_every(&self, fault: Fault, period: usize) {
        self.state.faults.set_every(fault, period);
    }

    /// Forget all queued faults and the standing one.
    pub fn clear_faults(&self) {
        self.state.faults.clear();
    }
}
