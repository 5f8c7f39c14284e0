//! The link model that feedback and the shaping evaluation judge allocations with, and the
//! feedback itself: an allocation against the demand that then came.
//!
//! **One user's window** (a fluid model): the window's demand of `D` bits arrives evenly over
//! the window's `T` seconds; the user is served at `r` bits/s, and the first `B` bits (the
//! burst) leave at once. While arrivals outpace `r`, a backlog builds up, and a bit arriving at
//! `t` waits `t (D/T - r) / r`. The share of the demand that leaves within the latency target
//! `L` of arriving is then
//!
//! ```text
//! served = 1                                        if D <= B or (D - B)/T <= r
//!        = (B + (D - B) min(1, L r / ((D - B) - r T))) / D   otherwise
//! ```
//!
//! **A shared link** ([`share_link`]): users' allocations are reserved (HTB `rate`), scaled
//! down together when they add up to more than the link; what users leave unused is lent to
//! the users that need more, in proportion to their priority weight, up to each one's ceiling
//! (HTB borrowing).

use serde::{Deserialize, Serialize};

/// The share of `demand_bits` arriving evenly over `window_secs` that leaves within
/// `target_secs` when served at `rate_bps` with `burst_bits` sent at once (1 without demand).
///
/// ```
/// use personaflow_operators::policies::link::served_within_target;
/// assert_eq!(served_within_target(1e6, 1e6, 0.0, 60.0, 0.05), 1.0); // well under the rate
/// // 120 Mbit in a minute at 1 Mbit/s: the backlog grows by 1 Mbit/s; a bit waits at most
/// // 50 ms only if it arrived in the first 50 ms: 1/1200 of the demand.
/// let s = served_within_target(120e6, 1e6, 0.0, 60.0, 0.05);
/// assert!((s - 0.05 / 60.0).abs() < 1e-12);
/// assert_eq!(served_within_target(5e6, 0.0, 0.0, 60.0, 0.05), 0.0);
/// ```
pub fn served_within_target(
    demand_bits: f64,
    rate_bps: f64,
    burst_bits: f64,
    window_secs: f64,
    target_secs: f64,
) -> f64 {
    if demand_bits <= 0.0 || !demand_bits.is_finite() {
        return 1.0;
    }
    let burst = burst_bits.clamp(0.0, demand_bits);
    let rest = demand_bits - burst;
    let t = window_secs.max(f64::MIN_POSITIVE);
    if rest <= rate_bps * t {
        return 1.0;
    }
    if rate_bps <= 0.0 {
        return burst / demand_bits;
    }
    // Arrival rate a = rest / T > r; a bit arriving at t waits t (a - r) / r; it is within L
    // while t <= L r / (a - r), a share L r / ((a - r) T) = L r / (rest - r T) of the window.
    let share = (target_secs.max(0.0) * rate_bps / (rest - rate_bps * t)).min(1.0);
    (burst + rest * share) / demand_bits
}

/// Rounds of lending spare capacity in [`share_link`] (each saturates at least one user or
/// spends the spare; water-filling is within a rounding error of exact well before this).
pub const MAX_LENDING_ROUNDS: usize = 32;

/// One user on a shared link for one window.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkUser {
    /// Reserved rate, bits/s.
    pub allocated_bps: f64,
    /// Most the user may borrow up to, bits/s.
    pub ceiling_bps: f64,
    /// Share of spare capacity.
    pub priority_weight: f64,
    /// Demand in the window, bits.
    pub demand_bits: f64,
    /// Burst, bits.
    pub burst_bits: f64,
    /// Latency target, seconds.
    pub target_secs: f64,
}

/// What a shared link did for one user in one window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkOutcome {
    /// Rate the user was served at, bits/s.
    pub rate_bps: f64,
    /// Bits served within the target.
    pub served_bits: f64,
    /// Bits reserved but not used.
    pub wasted_bits: f64,
}

/// Serves `users` for `window_secs` on a link of `capacity_bps`: reservations (scaled down
/// together to fit), then borrowing of what is unused by priority weight up to each ceiling.
///
/// ```
/// use personaflow_operators::policies::link::{share_link, LinkUser};
/// let u = |alloc: f64, demand_mbit: f64| LinkUser {
///     allocated_bps: alloc, ceiling_bps: 10e6, priority_weight: 1.0,
///     demand_bits: demand_mbit * 1e6, burst_bits: 0.0, target_secs: 0.1,
/// };
/// // 10 Mbit/s shared; one user idle on 5 Mbit/s reserved, one needing 8 Mbit/s on 5.
/// let out = share_link(&[u(5e6, 0.0), u(5e6, 480.0)], 10e6, 60.0);
/// assert_eq!(out[0].wasted_bits, 5e6 * 60.0);
/// assert_eq!(out[1].rate_bps, 8e6); // 3 Mbit/s borrowed from the idle reservation
/// assert_eq!(out[1].served_bits, 480e6);
/// ```
pub fn share_link(users: &[LinkUser], capacity_bps: f64, window_secs: f64) -> Vec<LinkOutcome> {
    let t = window_secs.max(f64::MIN_POSITIVE);
    let reserved: f64 = users.iter().map(|u| u.allocated_bps.max(0.0)).sum();
    let scale = if reserved > capacity_bps && reserved > 0.0 {
        capacity_bps / reserved
    } else {
        1.0
    };
    let need = |u: &LinkUser| u.demand_bits.max(0.0) / t;
    let mut rate: Vec<f64> = users
        .iter()
        .map(|u| (u.allocated_bps.max(0.0) * scale).min(need(u)))
        .collect();
    // Lend the spare capacity, by weight, to users short of their demand and below their
    // ceiling; repeat while some is left and someone can take it.
    for _ in 0..MAX_LENDING_ROUNDS {
        let spare = capacity_bps - rate.iter().sum::<f64>();
        if spare <= capacity_bps * 1e-12 {
            break;
        }
        let room: Vec<f64> = users
            .iter()
            .zip(&rate)
            .map(|(u, r)| need(u).min(u.ceiling_bps.max(u.allocated_bps * scale)) - r)
            .collect();
        let hungry: Vec<usize> = (0..users.len()).filter(|&i| room[i] > 1e-9).collect();
        let weight: f64 = hungry
            .iter()
            .map(|&i| users[i].priority_weight.max(1e-9))
            .sum();
        if hungry.is_empty() || weight <= 0.0 {
            break;
        }
        for &i in &hungry {
            rate[i] += (spare * users[i].priority_weight.max(1e-9) / weight).min(room[i]);
        }
    }
    users
        .iter()
        .zip(rate)
        .map(|(u, r)| {
            let share = served_within_target(u.demand_bits, r, u.burst_bits, t, u.target_secs);
            LinkOutcome {
                rate_bps: r,
                served_bits: share * u.demand_bits.max(0.0),
                wasted_bits: (u.allocated_bps.max(0.0) * scale * t - u.demand_bits.max(0.0))
                    .max(0.0),
            }
        })
        .collect()
}

/// An allocation made for a window against the demand that came in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    /// Bytes the allocation did not cover: `max(0, demand - allocated × T)`.
    pub shortfall_bytes: f64,
    /// Bytes allocated and unused: `max(0, allocated × T - demand)`.
    pub waste_bytes: f64,
    /// Requests beyond the rate limit: `max(0, requests - limit × T)`.
    pub excess_requests: f64,
    /// Share of the demand served within the latency target on the allocation alone
    /// ([`served_within_target`]).
    pub served_share: f64,
    /// All of it was.
    pub within_target: bool,
}

/// Feedback on an allocation of `allocated_bps` (burst `burst_bytes`, rate limit
/// `rate_limit_rps`, latency target `target_ms`) against `demand_bytes` and
/// `demand_requests` in a window of `window_secs`.
///
/// ```
/// use personaflow_operators::policies::link::feedback;
/// // 1 Mbit/s for a minute is 7.5 MB; 10 MB came.
/// let f = feedback(1e6, 0.0, 2.0, 200.0, 10e6, 100, 60.0);
/// assert_eq!((f.shortfall_bytes, f.waste_bytes, f.excess_requests), (2.5e6, 0.0, 0.0));
/// assert!(!f.within_target);
/// ```
pub fn feedback(
    allocated_bps: f64,
    burst_bytes: f64,
    rate_limit_rps: f64,
    target_ms: f64,
    demand_bytes: f64,
    demand_requests: u64,
    window_secs: f64,
) -> Feedback {
    let allocated_bytes = allocated_bps * window_secs / 8.0;
    let served_share = served_within_target(
        demand_bytes * 8.0,
        allocated_bps,
        burst_bytes * 8.0,
        window_secs,
        target_ms / 1_000.0,
    );
    Feedback {
        shortfall_bytes: (demand_bytes - allocated_bytes).max(0.0),
        waste_bytes: (allocated_bytes - demand_bytes).max(0.0),
        excess_requests: (demand_requests as f64 - rate_limit_rps * window_secs).max(0.0),
        served_share,
        within_target: served_share >= 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Oracle: the closed form against a step-by-step simulation of the queue.
    #[test]
    fn served_share_matches_a_simulated_queue() {
        let cases: [(f64, f64, f64, f64); 4] = [
            (120e6, 1e6, 0.0, 0.05),
            (120e6, 1.5e6, 8e6, 0.5),
            (30e6, 0.4e6, 1e6, 2.0),
            (60e6, 0.99e6, 0.0, 10.0),
        ];
        for (d, r, b, l) in cases {
            let t = 60.0;
            let steps = 600_000;
            let dt = t / steps as f64;
            let mut queue = 0.0;
            let mut within = b.min(d);
            let arrive = (d - b.min(d)) / t;
            for _ in 0..steps {
                let wait = queue / r;
                if wait <= l {
                    within += arrive * dt;
                }
                queue = (queue + (arrive - r) * dt).max(0.0);
            }
            let want = within / d;
            let got = served_within_target(d, r, b, t, l);
            assert!(
                (got - want).abs() < 1e-3,
                "{d} {r} {b} {l}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn a_link_never_serves_more_than_its_capacity_or_a_user_more_than_its_demand() {
        let users: Vec<LinkUser> = (0..20)
            .map(|i| LinkUser {
                allocated_bps: 1e6 * (i % 4) as f64,
                ceiling_bps: 5e6,
                priority_weight: 1.0 + (i % 3) as f64,
                demand_bits: 1e7 * i as f64,
                burst_bits: 0.0,
                target_secs: 0.1,
            })
            .collect();
        let out = share_link(&users, 20e6, 60.0);
        let used: f64 = out.iter().map(|o| o.rate_bps).sum();
        assert!(used <= 20e6 * (1.0 + 1e-9));
        for (u, o) in users.iter().zip(&out) {
            assert!(o.rate_bps * 60.0 <= u.demand_bits + 1e-6);
            assert!(o.served_bits <= u.demand_bits + 1e-6);
        }
    }
}
