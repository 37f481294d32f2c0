//! Choosing the arm for one request: the weighted split. Pure — no I/O, no clock; randomness
//! comes in as a seed.
//!
//! The split space is `0..100`. Every request draws a [`Ticket`] in that space and goes to the
//! canary when the ticket is below the canary weight, so a zero weight never receives a
//! weighted request and a weight of 100 takes them all (linkerd's "skip zero weights").
//!
//! * `random` draws tickets from a shuffled deck: each run of 100 consecutive requests holds
//!   every ticket exactly once, in an order that is pseudo-random per run. The share of the
//!   canary over any `n` requests therefore differs from the weight by less than `100 / n`
//!   requests' worth per boundary — 20,000 requests at 5 % land within ±0.5 points, always —
//!   while which request of a run lands where stays unpredictable.
//! * `sticky` derives the ticket from the caller's bearer token, so one user always lands on the
//!   same arm for a given weight, and a user on the canary at 5 % stays on it at 50 %.
//!
//! An arm that health checks report as not ready is skipped in favour of the other arm, as long
//! as that arm has a non-zero weight (a rolled-back canary never gets traffic back by fallback).
//! A pinned request (pins count only with proof, see [`crate::pin`]) goes where it was pinned,
//! unless that is a canary that was rolled back: then it is refused, never forwarded.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::arm::Arm;

/// Percent of traffic sent to the canary (`0..=100`); the baseline gets the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CanaryWeight(u8);

/// A weight outside `0..=100`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("canary weight {0} is out of range: give a percentage from 0 to 100")]
pub struct InvalidWeight(pub u32);

impl CanaryWeight {
    /// All traffic on the baseline.
    pub const ZERO: CanaryWeight = CanaryWeight(0);
    /// All traffic on the canary.
    pub const FULL: CanaryWeight = CanaryWeight(100);

    /// A weight in percent; fails outside `0..=100`.
    pub const fn new(percent: u8) -> Result<Self, InvalidWeight> {
        if percent <= 100 {
            Ok(CanaryWeight(percent))
        } else {
            Err(InvalidWeight(percent as u32))
        }
    }

    /// Percent of traffic for the canary.
    pub const fn canary(self) -> u8 {
        self.0
    }

    /// Percent of traffic for the baseline (`100 - canary`).
    pub const fn baseline(self) -> u8 {
        100 - self.0
    }

    /// Percent of traffic for `arm`.
    pub const fn share(self, arm: Arm) -> u8 {
        match arm {
            Arm::Canary => self.canary(),
            Arm::Baseline => self.baseline(),
        }
    }
}

impl fmt::Display for CanaryWeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "canary {} % / baseline {} %",
            self.canary(),
            self.baseline()
        )
    }
}

/// The split in force: the canary weight, and whether the canary was rolled back (its weight
/// went to 0 after it had traffic, or the lease lapsed) so that not even a pin may reach it
/// until the operator gives it traffic again or lifts the fence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitState {
    /// Percent to the canary.
    pub weight: CanaryWeight,
    /// The canary was rolled back: pinned requests to it are refused.
    pub canary_fenced: bool,
}

impl SplitState {
    /// The state after the weight becomes `weight`: a canary that had traffic and now has
    /// none is fenced; a canary given traffic is not; a fence otherwise stays as it was.
    pub const fn with_weight(self, weight: CanaryWeight) -> SplitState {
        let canary_fenced = if weight.canary() > 0 {
            false
        } else {
            self.canary_fenced || self.weight.canary() > 0
        };
        SplitState {
            weight,
            canary_fenced,
        }
    }
}

/// A request that must not be forwarded where it asked to go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// It is pinned to an arm that was rolled back.
    #[error(
        "the {0} arm was rolled back: pinned requests are refused until it gets traffic again \
         or an operator lifts the fence (admin API PUT /pin {{\"canary_fenced\": false}})"
    )]
    RolledBack(Arm),
}

/// How weighted requests are spread over the arms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SplitMode {
    /// Independent of the caller: a shuffled deck of tickets (see the module docs).
    #[default]
    Random,
    /// By a hash of the caller's bearer token, so one user sees one version; callers without
    /// a bearer token are split as in `Random`.
    Sticky,
}

impl FromStr for SplitMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "random" => Ok(SplitMode::Random),
            "sticky" => Ok(SplitMode::Sticky),
            other => Err(format!(
                "`{other}` is not a split mode: expected `random` or `sticky`"
            )),
        }
    }
}

/// A request's position in the split space `0..100`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u8);

impl Ticket {
    /// The ticket at position `sequence` of the shuffled deck identified by `seed`. Every
    /// aligned run of 100 sequence numbers yields each of `0..100` exactly once.
    pub fn shuffled(seed: u64, sequence: u64) -> Ticket {
        let run = sequence / 100;
        // Lossless: the remainder is below 100.
        let position = (sequence % 100) as u8;
        let key = mix(seed ^ mix(run.wrapping_add(0x5851_f42d_4c95_7f2d)));
        // Cycle-walk a permutation of 0..256 until it lands in 0..100: the walk restricted to
        // 0..100 is itself a permutation, and it ends because every cycle returns to its start.
        let mut x = position;
        loop {
            x = permute_byte(key, x);
            if x < 100 {
                return Ticket(x);
            }
        }
    }

    /// The ticket of a caller key (the bearer token): the same key always draws the same ticket.
    pub fn sticky(key: &[u8]) -> Ticket {
        // FNV-1a: stable across processes and releases, so stickiness survives restarts.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in key {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // Lossless: the remainder is below 100.
        Ticket((mix(hash) % 100) as u8)
    }

    /// The position in `0..100`.
    pub const fn value(self) -> u8 {
        self.0
    }
}

/// Which arms health checks currently consider able to serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Readiness {
    /// The baseline arm is ready.
    pub baseline: bool,
    /// The canary arm is ready.
    pub canary: bool,
}

impl Readiness {
    /// Both arms ready.
    pub const ALL: Readiness = Readiness {
        baseline: true,
        canary: true,
    };

    fn of(self, arm: Arm) -> bool {
        match arm {
            Arm::Baseline => self.baseline,
            Arm::Canary => self.canary,
        }
    }
}

/// Why a request went to its arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The pin header named the arm.
    Pinned,
    /// The ticket fell in the arm's share.
    Weighted,
    /// The ticket fell in the other arm's share, but that arm was not ready.
    Fallback,
}

/// The arm chosen for one request, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Where the request goes.
    pub arm: Arm,
    /// Why it goes there.
    pub reason: Reason,
}

/// Chooses the arm for one request.
///
/// Contract: a pinned request goes to its pin, unless the pin names a fenced (rolled-back)
/// canary — then it is refused; otherwise the ticket's arm, unless that arm is not ready while
/// the other arm is ready *and* has a non-zero share — then the other arm. A weighted request
/// never reaches an arm with a zero share.
pub fn choose(
    split: SplitState,
    ticket: Ticket,
    pin: Option<Arm>,
    ready: Readiness,
) -> Result<Decision, Refusal> {
    let weight = split.weight;
    if let Some(arm) = pin {
        if arm == Arm::Canary && split.canary_fenced {
            return Err(Refusal::RolledBack(arm));
        }
        return Ok(Decision {
            arm,
            reason: Reason::Pinned,
        });
    }
    let wanted = if ticket.value() < weight.canary() {
        Arm::Canary
    } else {
        Arm::Baseline
    };
    let other = wanted.other();
    Ok(
        if !ready.of(wanted) && ready.of(other) && weight.share(other) > 0 {
            Decision {
                arm: other,
                reason: Reason::Fallback,
            }
        } else {
            Decision {
                arm: wanted,
                reason: Reason::Weighted,
            }
        },
    )
}

/// Issues tickets for live requests: the shuffled deck (shared by all connections) or the
/// sticky hash, according to the split mode.
#[derive(Debug)]
pub struct Splitter {
    mode: SplitMode,
    seed: u64,
    sequence: AtomicU64,
}

impl Splitter {
    /// A splitter whose shuffled deck is determined by `seed`.
    pub fn new(mode: SplitMode, seed: u64) -> Self {
        Splitter {
            mode,
            seed,
            sequence: AtomicU64::new(0),
        }
    }

    /// The split mode.
    pub fn mode(&self) -> SplitMode {
        self.mode
    }

    /// The ticket for the next request; `caller` is its bearer token, if any.
    pub fn ticket(&self, caller: Option<&[u8]>) -> Ticket {
        match (self.mode, caller) {
            (SplitMode::Sticky, Some(key)) => Ticket::sticky(key),
            _ => Ticket::shuffled(self.seed, self.sequence.fetch_add(1, Ordering::Relaxed)),
        }
    }
}

/// A four-round Feistel network on the two nibbles of a byte: a keyed permutation of `0..256`.
fn permute_byte(key: u64, x: u8) -> u8 {
    let (mut left, mut right) = (x >> 4, x & 0x0f);
    for round in 0..4u64 {
        let f = (mix(key ^ (round << 8) ^ u64::from(right)) & 0x0f) as u8;
        (left, right) = (right, left ^ f);
    }
    (left << 4) | right
}

/// SplitMix64's finaliser: a cheap, well-distributed 64-bit mixer.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn weight(pct: u8) -> CanaryWeight {
        CanaryWeight::new(pct).unwrap()
    }

    fn split(pct: u8) -> SplitState {
        SplitState {
            weight: weight(pct),
            canary_fenced: false,
        }
    }

    fn canary_count(seed: u64, start: u64, n: u64, pct: u8) -> u64 {
        (start..start + n)
            .filter(|&seq| {
                choose(
                    split(pct),
                    Ticket::shuffled(seed, seq),
                    None,
                    Readiness::ALL,
                )
                .unwrap()
                .arm == Arm::Canary
            })
            .count() as u64
    }

    #[test]
    fn weight_outside_percent_is_rejected() {
        assert_eq!(CanaryWeight::new(101), Err(InvalidWeight(101)));
        assert_eq!(weight(5).baseline(), 95);
        assert_eq!(weight(5).share(Arm::Canary), 5);
    }

    #[test]
    fn twenty_thousand_requests_at_five_percent_land_within_tolerance() {
        // The bar: 20,000 requests at 5 % → canary share within ±0.6 points.
        let share = canary_count(0xc0ffee, 0, 20_000, 5) as f64 / 200.0;
        assert!((share - 5.0).abs() <= 0.6, "canary share {share} %");
    }

    #[test]
    fn zero_and_full_weights_are_absolute() {
        assert_eq!(canary_count(7, 0, 1_000, 0), 0);
        assert_eq!(canary_count(7, 0, 1_000, 100), 1_000);
    }

    #[test]
    fn decisions_follow_pin_then_weight_then_readiness() {
        // (weight, ticket, pin, ready baseline, ready canary) → (arm, reason)
        let table = [
            (5, 3, None, true, true, Arm::Canary, Reason::Weighted),
            (5, 5, None, true, true, Arm::Baseline, Reason::Weighted),
            (
                0,
                0,
                Some(Arm::Canary),
                true,
                true,
                Arm::Canary,
                Reason::Pinned,
            ),
            (
                100,
                99,
                Some(Arm::Baseline),
                true,
                false,
                Arm::Baseline,
                Reason::Pinned,
            ),
            (5, 3, None, true, false, Arm::Baseline, Reason::Fallback),
            (5, 50, None, false, true, Arm::Canary, Reason::Fallback),
            // A zero-weight arm is never a fallback target.
            (0, 50, None, false, true, Arm::Baseline, Reason::Weighted),
            (100, 50, None, true, false, Arm::Canary, Reason::Weighted),
            // Nothing ready: stay with the ticket; the upstream error will say why.
            (5, 3, None, false, false, Arm::Canary, Reason::Weighted),
        ];
        for (pct, ticket, pin, baseline, canary, arm, reason) in table {
            let got = choose(
                split(pct),
                Ticket(ticket),
                pin,
                Readiness { baseline, canary },
            );
            assert_eq!(
                got,
                Ok(Decision { arm, reason }),
                "weight {pct} ticket {ticket} pin {pin:?} ready b={baseline} c={canary}"
            );
        }
    }

    #[test]
    fn a_canary_that_had_traffic_and_lost_it_is_fenced_until_it_gets_traffic_again() {
        // (weights applied in order) → fenced after each
        let start = split(0);
        let steps = [
            (5, false),
            (0, true),
            (0, true),
            (25, false),
            (100, false),
            (0, true),
        ];
        let mut state = start;
        for (pct, fenced) in steps {
            state = state.with_weight(weight(pct));
            assert_eq!(state.canary_fenced, fenced, "after weight {pct}");
        }
        // Zero from the start is not a rollback: a trusted probe may still pin the canary.
        assert!(!start.with_weight(weight(0)).canary_fenced);
        let fenced = SplitState {
            weight: weight(0),
            canary_fenced: true,
        };
        assert_eq!(
            choose(fenced, Ticket(0), Some(Arm::Canary), Readiness::ALL),
            Err(Refusal::RolledBack(Arm::Canary))
        );
        assert_eq!(
            choose(fenced, Ticket(0), Some(Arm::Baseline), Readiness::ALL)
                .unwrap()
                .arm,
            Arm::Baseline
        );
    }

    #[test]
    fn sticky_mode_uses_the_token_and_random_mode_ignores_it() {
        let sticky = Splitter::new(SplitMode::Sticky, 1);
        let first = sticky.ticket(Some(b"token-a"));
        for _ in 0..50 {
            assert_eq!(sticky.ticket(Some(b"token-a")), first);
        }
        let random = Splitter::new(SplitMode::Random, 1);
        let tickets: std::collections::BTreeSet<u8> = (0..100)
            .map(|_| random.ticket(Some(b"token-a")).value())
            .collect();
        assert_eq!(tickets.len(), 100, "one full deck");
    }

    proptest! {
        #[test]
        fn every_run_of_a_hundred_is_a_full_deck(seed: u64, run in 0u64..1_000_000_000) {
            let mut seen = [false; 100];
            for position in 0..100 {
                let ticket = Ticket::shuffled(seed, run * 100 + position).value();
                prop_assert!(ticket < 100);
                prop_assert!(!seen[ticket as usize], "ticket {} drawn twice", ticket);
                seen[ticket as usize] = true;
            }
        }

        #[test]
        fn split_converges_to_the_weight(
            seed: u64,
            start in 0u64..1_000_000_000,
            n in 100u64..30_000,
            pct in 0u8..=100,
        ) {
            // Two partial runs at most (one at each end), each off by under 50 requests.
            let count = canary_count(seed, start, n, pct) as f64;
            let expected = n as f64 * f64::from(pct) / 100.0;
            prop_assert!((count - expected).abs() < 100.0, "{} canary of {} at {} %", count, n, pct);
            if n >= 16_700 {
                // 100 requests over 16,700 is under 0.6 points: the issue's ±0.6 bar holds.
                prop_assert!((count / n as f64 * 100.0 - f64::from(pct)).abs() <= 0.6);
            }
        }

        #[test]
        fn sticky_tickets_are_stable_and_monotone_in_weight(token: Vec<u8>, low in 0u8..=100, high in 0u8..=100) {
            let (low, high) = (low.min(high), low.max(high));
            let ticket = Ticket::sticky(&token);
            prop_assert_eq!(ticket, Ticket::sticky(&token));
            let on_canary = |pct| choose(split(pct), ticket, None, Readiness::ALL).unwrap().arm == Arm::Canary;
            // A user on the canary at a low weight stays there as the weight grows.
            prop_assert!(!on_canary(low) || on_canary(high));
        }
    }
}
