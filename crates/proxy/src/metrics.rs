//! Per-arm telemetry and its Prometheus text exposition (format 0.0.4) for `GET /metrics`.
//!
//! Every label set is bounded: `arm` (2 values), `code_class` (`1xx`..`5xx`), `outcome` (4),
//! `kind` (the [`FailureKind`] labels), `reason` (the [`PinRefusal`] labels). Recording is a handful of relaxed atomic adds, so the
//! data path never waits on the exposition.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::StatusCode;

use crate::arm::Arm;
use crate::control::HealthStatus;
use crate::distribute::CanaryWeight;
use crate::error::{Blame, FailureKind};

/// Upper bounds (seconds) of the latency histograms' buckets; `+Inf` is implied.
const BUCKETS: [f64; 17] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];

const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// How a `text/event-stream` response ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamOutcome {
    /// The upstream ended the stream and every byte reached the client.
    Complete,
    /// The client went away first.
    ClientClosed,
    /// The upstream connection failed mid-stream.
    UpstreamError,
    /// The upstream was silent for longer than the idle timeout.
    Timeout,
}

impl StreamOutcome {
    /// All outcomes, in metric order.
    pub const ALL: [StreamOutcome; 4] = [
        StreamOutcome::Complete,
        StreamOutcome::ClientClosed,
        StreamOutcome::UpstreamError,
        StreamOutcome::Timeout,
    ];

    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            StreamOutcome::Complete => "complete",
            StreamOutcome::ClientClosed => "client_closed",
            StreamOutcome::UpstreamError => "upstream_error",
            StreamOutcome::Timeout => "timeout",
        }
    }
}

/// A cumulative latency histogram with fixed buckets.
#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, arm: Arm) {
        let mut cumulative = 0u64;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{arm=\"{arm}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.buckets[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{arm=\"{arm}\",le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{arm=\"{arm}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{arm=\"{arm}\"}} {cumulative}");
    }
}

/// Why a pin header was not honoured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinRefusal {
    /// It came without the pin token: ignored, the request was split like any other.
    Unauthenticated,
    /// It named a canary that was rolled back: the request was refused with 403.
    RolledBack,
}

impl PinRefusal {
    /// All reasons, in metric order.
    pub const ALL: [PinRefusal; 2] = [PinRefusal::Unauthenticated, PinRefusal::RolledBack];

    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            PinRefusal::Unauthenticated => "unauthenticated",
            PinRefusal::RolledBack => "rolled_back",
        }
    }
}

/// The live values that are not counters, read at exposition time.
pub(crate) struct Gauges {
    pub weight: CanaryWeight,
    pub canary_fenced: bool,
    pub health: [HealthStatus; 2],
    pub lease_held: bool,
}

/// All counters and histograms of one proxy.
#[derive(Default)]
pub(crate) struct Metrics {
    requests: [[AtomicU64; 5]; 2],
    duration: [Histogram; 2],
    first_byte: [Histogram; 2],
    streams: [[AtomicU64; 4]; 2],
    upstream_errors: [[AtomicU64; FailureKind::ALL.len()]; 2],
    fallbacks: [AtomicU64; 2],
    /// Failures blamed on the client, by kind (no arm is charged with them).
    client_errors: [AtomicU64; FailureKind::ALL.len()],
    pins_refused: [AtomicU64; PinRefusal::ALL.len()],
    lease_expirations: AtomicU64,
}

impl Metrics {
    /// A response head (from the arm, or made by the proxy on its behalf) went to the client.
    pub fn count_response(&self, arm: Arm, status: StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.requests[arm.index()][class].fetch_add(1, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, arm: Arm, elapsed: Duration) {
        self.duration[arm.index()].observe(elapsed);
    }

    pub fn observe_first_byte(&self, arm: Arm, elapsed: Duration) {
        self.first_byte[arm.index()].observe(elapsed);
    }

    pub fn count_stream(&self, arm: Arm, outcome: StreamOutcome) {
        self.streams[arm.index()][outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_failure(&self, arm: Option<Arm>, kind: FailureKind) {
        match arm {
            Some(arm) => {
                self.upstream_errors[arm.index()][kind.index()].fetch_add(1, Ordering::Relaxed);
            }
            None => {
                self.client_errors[kind.index()].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn count_fallback(&self, to: Arm) {
        self.fallbacks[to.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_pin_refused(&self, why: PinRefusal) {
        self.pins_refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_lease_expiration(&self) {
        self.lease_expirations.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(8 * 1024);
        header(
            &mut out,
            "canary_proxy_requests_total",
            "counter",
            "Responses sent to clients, by the arm that served them and status class.",
        );
        for arm in Arm::ALL {
            for (class, label) in CODE_CLASSES.iter().enumerate() {
                let v = self.requests[arm.index()][class].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "canary_proxy_requests_total{{arm=\"{arm}\",code_class=\"{label}\"}} {v}"
                );
            }
        }
        header(
            &mut out,
            "canary_proxy_request_duration_seconds",
            "histogram",
            "Time from receiving a request to the end of its response body (streams included).",
        );
        for arm in Arm::ALL {
            self.duration[arm.index()].render(
                &mut out,
                "canary_proxy_request_duration_seconds",
                arm,
            );
        }
        header(
            &mut out,
            "canary_proxy_first_byte_seconds",
            "histogram",
            "Time from receiving a request to forwarding the first byte of its response body.",
        );
        for arm in Arm::ALL {
            self.first_byte[arm.index()].render(&mut out, "canary_proxy_first_byte_seconds", arm);
        }
        header(
            &mut out,
            "canary_proxy_sse_streams_total",
            "counter",
            "text/event-stream responses, by how they ended.",
        );
        for arm in Arm::ALL {
            for outcome in StreamOutcome::ALL {
                let v = self.streams[arm.index()][outcome as usize].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "canary_proxy_sse_streams_total{{arm=\"{arm}\",outcome=\"{}\"}} {v}",
                    outcome.as_str()
                );
            }
        }
        header(
            &mut out,
            "canary_proxy_upstream_errors_total",
            "counter",
            "Requests the proxy answered itself because the arm failed, by failure kind.",
        );
        for arm in Arm::ALL {
            for kind in FailureKind::ALL {
                if kind.blame() == Blame::Downstream {
                    continue;
                }
                let v = self.upstream_errors[arm.index()][kind.index()].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "canary_proxy_upstream_errors_total{{arm=\"{arm}\",kind=\"{}\"}} {v}",
                    kind.as_str()
                );
            }
        }
        header(
            &mut out,
            "canary_proxy_fallback_requests_total",
            "counter",
            "Requests sent to an arm because the arm their ticket chose was unhealthy.",
        );
        for arm in Arm::ALL {
            let v = self.fallbacks[arm.index()].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "canary_proxy_fallback_requests_total{{arm=\"{arm}\"}} {v}"
            );
        }
        header(
            &mut out,
            "canary_proxy_bad_requests_total",
            "counter",
            "Requests refused with 400 because of the client (a bad pin header, a missing, repeated or malformed Host, a body cut short); the bad_request kind of canary_proxy_client_errors_total.",
        );
        let _ = writeln!(
            out,
            "canary_proxy_bad_requests_total {}",
            self.client_errors[FailureKind::BadRequest.index()].load(Ordering::Relaxed)
        );
        header(
            &mut out,
            "canary_proxy_client_errors_total",
            "counter",
            "Requests the proxy answered itself because of the client, charged to no arm: bad_request (400), method_not_allowed (CONNECT, 405), client_timeout (request body stalled, 408).",
        );
        for kind in FailureKind::ALL {
            if kind.blame() != Blame::Downstream {
                continue;
            }
            let _ = writeln!(
                out,
                "canary_proxy_client_errors_total{{kind=\"{}\"}} {}",
                kind.as_str(),
                self.client_errors[kind.index()].load(Ordering::Relaxed)
            );
        }
        header(
            &mut out,
            "canary_proxy_pins_refused_total",
            "counter",
            "Pin headers not honoured: sent without the pin token (ignored), or naming a rolled-back canary (403).",
        );
        for why in PinRefusal::ALL {
            let _ = writeln!(
                out,
                "canary_proxy_pins_refused_total{{reason=\"{}\"}} {}",
                why.as_str(),
                self.pins_refused[why as usize].load(Ordering::Relaxed)
            );
        }
        header(
            &mut out,
            "canary_proxy_canary_fenced",
            "gauge",
            "1 while the canary is fenced after a rollback: no request reaches it, pinned or not.",
        );
        let _ = writeln!(
            out,
            "canary_proxy_canary_fenced {}",
            u8::from(gauges.canary_fenced)
        );
        header(
            &mut out,
            "canary_proxy_weight",
            "gauge",
            "Percent of weighted traffic each arm receives.",
        );
        for arm in Arm::ALL {
            let _ = writeln!(
                out,
                "canary_proxy_weight{{arm=\"{arm}\"}} {}",
                gauges.weight.share(arm)
            );
        }
        header(
            &mut out,
            "canary_proxy_arm_healthy",
            "gauge",
            "1 if the arm's last health checks passed, 0 if they failed, -1 if not yet checked.",
        );
        for arm in Arm::ALL {
            let v = match gauges.health[arm.index()] {
                HealthStatus::Healthy => 1,
                HealthStatus::Unhealthy => 0,
                HealthStatus::Unknown => -1,
            };
            let _ = writeln!(out, "canary_proxy_arm_healthy{{arm=\"{arm}\"}} {v}");
        }
        header(
            &mut out,
            "canary_proxy_lease_held",
            "gauge",
            "1 while a controller holds the dead man's switch lease.",
        );
        let _ = writeln!(
            out,
            "canary_proxy_lease_held {}",
            u8::from(gauges.lease_held)
        );
        header(
            &mut out,
            "canary_proxy_lease_expirations_total",
            "counter",
            "Leases that lapsed, each returning all traffic to the baseline.",
        );
        let _ = writeln!(
            out,
            "canary_proxy_lease_expirations_total {}",
            self.lease_expirations.load(Ordering::Relaxed)
        );
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_carries_every_required_series() {
        let m = Metrics::default();
        m.count_response(Arm::Canary, StatusCode::BAD_GATEWAY);
        m.count_response(Arm::Baseline, StatusCode::OK);
        m.observe_duration(Arm::Canary, Duration::from_millis(3));
        m.observe_first_byte(Arm::Canary, Duration::from_millis(1));
        m.count_stream(Arm::Canary, StreamOutcome::Timeout);
        m.count_failure(Some(Arm::Canary), FailureKind::Reset);
        m.count_failure(None, FailureKind::ClientTimeout);
        m.count_pin_refused(PinRefusal::Unauthenticated);
        let text = m.render(&Gauges {
            weight: CanaryWeight::new(5).unwrap(),
            canary_fenced: false,
            health: [HealthStatus::Healthy, HealthStatus::Unhealthy],
            lease_held: true,
        });
        for line in [
            "canary_proxy_requests_total{arm=\"canary\",code_class=\"5xx\"} 1",
            "canary_proxy_requests_total{arm=\"baseline\",code_class=\"2xx\"} 1",
            "canary_proxy_request_duration_seconds_bucket{arm=\"canary\",le=\"0.0025\"} 0",
            "canary_proxy_request_duration_seconds_bucket{arm=\"canary\",le=\"0.005\"} 1",
            "canary_proxy_request_duration_seconds_count{arm=\"canary\"} 1",
            "canary_proxy_first_byte_seconds_bucket{arm=\"canary\",le=\"+Inf\"} 1",
            "canary_proxy_sse_streams_total{arm=\"canary\",outcome=\"timeout\"} 1",
            "canary_proxy_sse_streams_total{arm=\"baseline\",outcome=\"complete\"} 0",
            "canary_proxy_upstream_errors_total{arm=\"canary\",kind=\"reset\"} 1",
            "canary_proxy_client_errors_total{kind=\"client_timeout\"} 1",
            "canary_proxy_client_errors_total{kind=\"method_not_allowed\"} 0",
            "canary_proxy_bad_requests_total 0",
            "canary_proxy_weight{arm=\"canary\"} 5",
            "canary_proxy_weight{arm=\"baseline\"} 95",
            "canary_proxy_arm_healthy{arm=\"canary\"} 0",
            "canary_proxy_lease_held 1",
            "canary_proxy_pins_refused_total{reason=\"unauthenticated\"} 1",
            "canary_proxy_pins_refused_total{reason=\"rolled_back\"} 0",
            "canary_proxy_canary_fenced 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in\n{text}"
            );
        }
        // The client's failures are charged to no arm.
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("canary_proxy_upstream_errors_total")
                    && l.contains("client_timeout")),
            "{text}"
        );
    }
}
