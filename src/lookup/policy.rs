//! The Lookup answer turned into what the courier does: send as asked,
//! call instead of texting (the landline fallback of `delivery::fallback`),
//! or refuse with a stable code. The table is `lookup.line_types`; SIM swap
//! and pumping risk refuse on top of it.

use std::sync::Arc;

use super::cache;
use super::client::{Field, LookupAnswer, LookupClient, LookupError};
use crate::clock::Clock;
use crate::config::{LineAction, LookupConfig, LookupOnError, LINE_TYPES};
use crate::domain::TemplateType;
use crate::store::{Keys, Store};
use crate::telemetry::metrics::Metrics;

/// What the answer lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing learnt (no line type, `unknown`, or a failed lookup with
    /// `on_error = "allow"`): the numbering plan's guess stands.
    NoOpinion,
    /// A line type whose action is `sms`: send as asked, even to what the
    /// numbering plan thinks is a fixed line (Twilio knows ports).
    Sms,
    /// A line type whose action is `voice`: an SMS becomes a call.
    Voice,
}

/// Why the answer refuses the code; `delivery` turns it into its error
/// (and `http::answer` into a 422 or a 503).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `lookup.line_types` refuses this line type (Twilio's spelling).
    LineType(&'static str),
    SimSwap,
    PumpingRisk,
    /// The lookup failed and `lookup.on_error = "refuse"`.
    Unavailable,
}

impl Refusal {
    /// The stable code, also the metric's label.
    pub(crate) fn code(self) -> &'static str {
        match self {
            Refusal::LineType(_) => "line_type_refused",
            Refusal::SimSwap => "sim_swap_suspected",
            Refusal::PumpingRisk => "sms_pumping_risk",
            Refusal::Unavailable => "lookup_unavailable",
        }
    }
}

/// The Lookup policy, with its client and the store its cache lives in.
pub struct Lookup {
    config: LookupConfig,
    client: LookupClient,
    store: Arc<Store>,
    keys: Keys,
    clock: Clock,
    metrics: Arc<Metrics>,
}

impl Lookup {
    pub(crate) fn new(
        config: LookupConfig,
        client: LookupClient,
        store: Arc<Store>,
        keys: Keys,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> Self {
        Lookup {
            config,
            client,
            store,
            keys,
            clock,
            metrics,
        }
    }

    /// Whether some line type's action turns an SMS into a call.
    pub(crate) fn may_call(&self) -> bool {
        self.config.may_call()
    }

    /// The packages this message needs: SIM swap only for the templates
    /// it can refuse (it is billed even when it has no data).
    fn fields(&self, template: &TemplateType) -> Vec<Field> {
        let c = &self.config;
        let mut fields = Vec::new();
        if c.line_type {
            fields.push(Field::LineType);
        }
        if c.refuses_swapped(template) {
            fields.push(Field::SimSwap);
        }
        if c.sms_pumping_risk {
            fields.push(Field::PumpingRisk);
        }
        fields
    }

    /// Ask (the cache first, then Twilio for what it lacks) and decide.
    pub(crate) async fn decide(
        &self,
        e164: &str,
        template: &TemplateType,
    ) -> Result<Verdict, Refusal> {
        let fields = self.fields(template);
        let now = self.clock.unix().as_millis() as u64;
        let mut answer = LookupAnswer::default();
        let missing = cache::read(&self.store, &self.keys, e164, &fields, now, &mut answer).await;
        if !missing.is_empty() {
            let fetched = match self.allowance(now).await {
                Ok(()) => self.client.fetch(e164, &missing).await,
                Err(capped) => Err(capped),
            };
            match fetched {
                Ok(fresh) => {
                    self.metrics.lookup_answered(
                        fresh
                            .line_type
                            .as_deref()
                            .map(|t| LINE_TYPES[self.config.action(t).0].1)
                            .unwrap_or("none"),
                    );
                    cache::write(&self.store, &self.keys, e164, &missing, now, &fresh).await;
                    answer.line_type = answer.line_type.or(fresh.line_type);
                    answer.sim_swapped = answer.sim_swapped.or(fresh.sim_swapped);
                    answer.pumping_score = answer.pumping_score.or(fresh.pumping_score);
                }
                Err(e) => {
                    if !matches!(e, LookupError::Capped) {
                        self.metrics.lookup_failed();
                    }
                    tracing::warn!(error = %e, on_error = ?self.config.on_error, "Twilio Lookup failed");
                    return match self.config.on_error {
                        LookupOnError::Allow => Ok(Verdict::NoOpinion),
                        LookupOnError::Refuse => {
                            self.metrics.lookup_refused(Refusal::Unavailable.code());
                            Err(Refusal::Unavailable)
                        }
                    };
                }
            }
        }
        let refused = self.judge(&answer, template);
        if let Err(e) = &refused {
            self.metrics.lookup_refused(e.code());
        }
        refused
    }

    /// One billed lookup from this clock hour's `lookup.max_per_hour`, all
    /// replicas together (a counter in the store). A store that does not
    /// answer does not stop the lookup: the cap bounds a bill, and the send
    /// itself already passed the limits and the budget.
    async fn allowance(&self, now: u64) -> Result<(), LookupError> {
        const HOUR_MS: u64 = 3_600_000;
        let cap = self.config.max_per_hour;
        if cap == 0 {
            return Ok(());
        }
        let hour = now / HOUR_MS;
        let key = self.keys.relay("lookup-hour", &[&hour.to_be_bytes()]);
        match self
            .store
            .count_take(&key, cap, now, (hour + 1) * HOUR_MS)
            .await
        {
            Ok(Some(taken)) => {
                self.metrics
                    .budget_used_in("lookup_hour", f64::from(taken) / f64::from(cap));
                Ok(())
            }
            Ok(None) => {
                self.metrics.budget_used_in("lookup_hour", 1.0);
                self.metrics.lookup_capped();
                Err(LookupError::Capped)
            }
            Err(e) => {
                tracing::warn!(error = %e, "the store did not answer; the lookup is made uncounted");
                Ok(())
            }
        }
    }

    /// The answer against the configuration.
    fn judge(&self, answer: &LookupAnswer, template: &TemplateType) -> Result<Verdict, Refusal> {
        let c = &self.config;
        let mut verdict = Verdict::NoOpinion;
        if let Some(t) = answer.line_type.as_deref() {
            let (i, action) = c.action(t);
            verdict = match action {
                LineAction::Refuse => return Err(Refusal::LineType(LINE_TYPES[i].0)),
                LineAction::Voice => Verdict::Voice,
                LineAction::Sms if LINE_TYPES[i].0 == "unknown" => Verdict::NoOpinion,
                LineAction::Sms => Verdict::Sms,
            };
        }
        if answer.sim_swapped == Some(true) && c.refuses_swapped(template) {
            return Err(Refusal::SimSwap);
        }
        if c.sms_pumping_risk
            && answer
                .pumping_score
                .is_some_and(|s| s > c.max_pumping_score)
        {
            return Err(Refusal::PumpingRisk);
        }
        Ok(verdict)
    }
}

/// The policy's reading of its checked section.
impl LookupConfig {
    /// The action for a Twilio line type (anything unlisted is `unknown`).
    pub fn action(&self, twilio_type: &str) -> (usize, LineAction) {
        let i = LINE_TYPES
            .iter()
            .position(|(t, _)| *t == twilio_type)
            .unwrap_or(LINE_TYPES.len() - 1);
        (i, self.actions[i])
    }

    /// Does a swapped SIM refuse this template's code?
    pub(crate) fn refuses_swapped(&self, template: &TemplateType) -> bool {
        self.sim_swap && self.sim_swap_refuse_for.contains(&template.label())
    }
}
