//! Failures the sandbox can simulate, so clients can be tested against a
//! misbehaving Twilio: slow, overloaded, broken connections, odd answers.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

/// A simulated failure for one create request.
///
/// The textual names (header `X-Sandbox-Fault`, admin endpoint) are:
/// `latency=MILLIS`, `accept-then-latency=MILLIS`, `500`, `503`, `429`,
/// `429-retry-after=SECONDS`, `drop`, `reset`, `not-json`, `redirect`,
/// `undelivered=CODE`.
///
/// Faults apply to create requests only; listing (`GET .../Messages.json`)
/// neither takes a header fault nor consumes a queued or standing one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Wait, then answer normally.
    Latency(Duration),
    /// Process the request at once (an accepted message is in the inbox and
    /// in the list endpoint straight away, its status callbacks start), but
    /// hold the answer this long. A client whose timeout is shorter gives up
    /// although "Twilio" has the message: the uncertain outcome a client must
    /// reconcile by listing instead of sending again.
    AcceptThenLatency(Duration),
    /// 500 with Twilio code 20500.
    Status500,
    /// 503 with Twilio code 20503.
    Status503,
    /// 429 with Twilio code 20429, optionally with a `Retry-After` header.
    TooManyRequests { retry_after: Option<u64> },
    /// Close the connection without answering.
    DropConnection,
    /// Send the status line, headers and part of the body, then close.
    ResetMidAnswer,
    /// 201 with a body that is not JSON.
    NotJson,
    /// 307 to another URL.
    Redirect,
    /// Accept the message, but report `undelivered` with this `ErrorCode`
    /// (e.g. 30003) in the status callback, as Twilio does for delivery
    /// failures. Calls ignore it.
    Undelivered { error_code: u32 },
}

/// A fault name that is not one of the documented ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown fault {0:?}; expected latency=MILLIS, accept-then-latency=MILLIS, 500, 503, 429, 429-retry-after=SECONDS, drop, reset, not-json, redirect or undelivered=CODE")]
pub struct UnknownFault(pub String);

impl FromStr for Fault {
    type Err = UnknownFault;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim();
        let unknown = || UnknownFault(name.to_owned());
        let fault = match name {
            "500" => Fault::Status500,
            "503" => Fault::Status503,
            "429" => Fault::TooManyRequests { retry_after: None },
            "drop" => Fault::DropConnection,
            "reset" => Fault::ResetMidAnswer,
            "not-json" => Fault::NotJson,
            "redirect" => Fault::Redirect,
            _ => {
                if let Some(ms) = name.strip_prefix("latency=") {
                    Fault::Latency(Duration::from_millis(ms.parse().map_err(|_| unknown())?))
                } else if let Some(ms) = name.strip_prefix("accept-then-latency=") {
                    Fault::AcceptThenLatency(Duration::from_millis(
                        ms.parse().map_err(|_| unknown())?,
                    ))
                } else if let Some(secs) = name.strip_prefix("429-retry-after=") {
                    Fault::TooManyRequests {
                        retry_after: Some(secs.parse().map_err(|_| unknown())?),
                    }
                } else if let Some(code) = name.strip_prefix("undelivered=") {
                    Fault::Undelivered {
                        error_code: code.parse().map_err(|_| unknown())?,
                    }
                } else {
                    return Err(unknown());
                }
            }
        };
        Ok(fault)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Latency(d) => write!(f, "latency={}", d.as_millis()),
            Fault::AcceptThenLatency(d) => write!(f, "accept-then-latency={}", d.as_millis()),
            Fault::Status500 => f.write_str("500"),
            Fault::Status503 => f.write_str("503"),
            Fault::TooManyRequests { retry_after: None } => f.write_str("429"),
            Fault::TooManyRequests {
                retry_after: Some(s),
            } => write!(f, "429-retry-after={s}"),
            Fault::DropConnection => f.write_str("drop"),
            Fault::ResetMidAnswer => f.write_str("reset"),
            Fault::NotJson => f.write_str("not-json"),
            Fault::Redirect => f.write_str("redirect"),
            Fault::Undelivered { error_code } => write!(f, "undelivered={error_code}"),
        }
    }
}

/// Faults queued for the next create requests, each with a remaining count,
/// and at most one standing fault that keeps recurring.
#[derive(Debug, Default)]
pub(crate) struct FaultQueue {
    queue: Mutex<VecDeque<(Fault, usize)>>,
    every: Mutex<Option<Every>>,
}

/// A fault that recurs instead of running out: of the create requests the
/// queue leaves alone, the 1st, the `period + 1`th, the `2 * period + 1`th…
/// get it. `serve --dev --failover` runs a primary that fails every other
/// request this way, so both failover and plain success show.
#[derive(Debug)]
struct Every {
    fault: Fault,
    period: usize,
    /// Requests counted so far.
    seen: usize,
}

impl FaultQueue {
    pub(crate) fn push(&self, fault: Fault, count: usize) {
        if count == 0 {
            return;
        }
        self.lock().push_back((fault, count));
    }

    /// From now on, one create request in every `period` gets `fault`,
    /// starting with the next one the queue leaves alone; replaces any
    /// standing fault. A period of 0 removes it.
    pub(crate) fn set_every(&self, fault: Fault, period: usize) {
        *self.lock_every() = (period > 0).then_some(Every {
            fault,
            period,
            seen: 0,
        });
    }

    /// The fault for the next create request: a queued one first, else the
    /// standing one when its turn has come.
    pub(crate) fn take(&self) -> Option<Fault> {
        {
            let mut queue = self.lock();
            if let Some((fault, remaining)) = queue.front_mut() {
                let fault = fault.clone();
                *remaining -= 1;
                if *remaining == 0 {
                    queue.pop_front();
                }
                return Some(fault);
            }
        }
        let mut every = self.lock_every();
        let every = every.as_mut()?;
        let due = every.seen % every.period == 0;
        every.seen = every.seen.wrapping_add(1);
        due.then(|| every.fault.clone())
    }

    /// Forget the queued faults and the standing one.
    pub(crate) fn clear(&self) {
        self.lock().clear();
        *self.lock_every() = None;
    }

    fn lock_every(&self) -> std::sync::MutexGuard<'_, Option<Every>> {
        self.every
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Fault, usize)>> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in [
            "latency=250",
            "accept-then-latency=1500",
            "500",
            "503",
            "429",
            "429-retry-after=7",
            "drop",
            "reset",
            "not-json",
            "redirect",
            "undelivered=30003",
        ] {
            let fault: Fault = name.parse().expect(name);
            assert_eq!(fault.to_string(), name);
        }
    }

    #[test]
    fn rejects_unknown_names() {
        for name in [
            "",
            "404",
            "latency=",
            "latency=abc",
            "accept-then-latency",
            "accept-then-latency=-5",
            "429-retry-after=-1",
        ] {
            assert!(name.parse::<Fault>().is_err(), "{name}");
        }
    }

    #[test]
    fn queue_honours_counts_in_order() {
        let queue = FaultQueue::default();
        queue.push(Fault::Status503, 2);
        queue.push(Fault::NotJson, 1);
        queue.push(Fault::Status500, 0);
        assert_eq!(queue.take(), Some(Fault::Status503));
        assert_eq!(queue.take(), Some(Fault::Status503));
        assert_eq!(queue.take(), Some(Fault::NotJson));
        assert_eq!(queue.take(), None);
        queue.push(Fault::Redirect, 5);
        queue.clear();
        assert_eq!(queue.take(), None);
    }

    #[test]
    fn a_standing_fault_recurs_after_the_queue() {
        let queue = FaultQueue::default();
        queue.set_every(Fault::Status503, 2);
        queue.push(Fault::NotJson, 1);
        assert_eq!(queue.take(), Some(Fault::NotJson));
        let taken: Vec<_> = (0..5).map(|_| queue.take()).collect();
        assert_eq!(
            taken,
            [
                Some(Fault::Status503),
                None,
                Some(Fault::Status503),
                None,
                Some(Fault::Status503)
            ]
        );
        queue.set_every(Fault::Status500, 3);
        let taken: Vec<_> = (0..4).map(|_| queue.take()).collect();
        assert_eq!(
            taken,
            [Some(Fault::Status500), None, None, Some(Fault::Status500)]
        );
        queue.clear();
        assert_eq!(queue.take(), None);
        queue.set_every(Fault::Status503, 0);
        assert_eq!(queue.take(), None);
    }
}
