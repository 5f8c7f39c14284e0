//! Sequences: a user's last `L` windows of features, built for each window the user is
//! active in (DESIGN.md step 3).
//!
//! Its operator: [`operator::Sequences`].

pub mod operator;

use crate::event::Context;
use crate::policies::socket::WindowDemand;
use crate::vector::Vector;
use crate::window::features::{WindowSummary, NUM_FEATURES, VELOCITY_BYTES, VELOCITY_EVENTS};
use serde::{Deserialize, Serialize};

/// Default sequence length `L`, in windows.
pub const DEFAULT_SEQUENCE_LEN: usize = 16;

/// A user's last `L` windows ending at `window`, oldest first, as one contiguous `L x F`
/// matrix (`F` = [`NUM_FEATURES`]) with a mask of the windows the user was active in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Sequence {
    /// The window the sequence ends at (the user is active in it).
    pub window: u64,
    /// Row-major `L x F` features; step `i` is window `window - L + 1 + i`; all zeros where
    /// the user was inactive.
    pub features: Vector,
    /// `active[i]`: the user had events in step `i`'s window.
    pub active: Vec<bool>,
    /// Active windows before the current one (0 for a user with no history).
    pub history_windows: u32,
    /// Events in the current window.
    pub events: u64,
    /// Bytes in + out in the current window.
    pub bytes: u64,
    /// Authenticated in the current window.
    pub authenticated: bool,
    /// Known segment (authenticated users only).
    pub segment: Option<String>,
    /// Context seen in the current window.
    pub context: Context,
    /// What the current window asked of the network.
    pub demand: WindowDemand,
}

impl Sequence {
    /// Number of steps, `L`.
    pub fn len(&self) -> usize {
        self.active.len()
    }

    /// True for a sequence of no steps (never built by [`build_sequence`]).
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Step `i`'s features, `None` where the user was inactive.
    pub fn step(&self, i: usize) -> Option<&[f32]> {
        self.active
            .get(i)
            .copied()
            .unwrap_or(false)
            .then(|| &self.features.0[i * NUM_FEATURES..(i + 1) * NUM_FEATURES])
    }

    /// The features of the active steps, oldest first.
    pub fn active_steps(&self) -> impl Iterator<Item = &[f32]> + '_ {
        (0..self.len()).filter_map(|i| self.step(i))
    }

    /// The current window's features (the last step).
    pub fn current(&self) -> &[f32] {
        self.step(self.len() - 1)
            .expect("a sequence's last step is its active window")
    }
}

/// Builds the sequence of length `len` ending at `window` from the user's window summaries
/// `history` (any order; windows outside `(window - len, window]` are ignored). Returns `None`
/// if the user is not active in `window`.
///
/// Velocity features compare each step with the previous active step inside the sequence.
///
/// ```
/// use personaflow_operators::{Event, WindowSpec};
/// use personaflow_operators::window::features::{WindowAgg, WindowSummary};
/// use personaflow_operators::sequences::build_sequence;
/// let spec = WindowSpec::default();
/// let s = |w: u64| WindowSummary::new(&WindowAgg::of(&Event::new(w as i64 * 60_000, "u", "a")), w, &spec);
/// let seq = build_sequence(10, 4, &[(7, &s(7)), (10, &s(10)), (3, &s(3))]).unwrap();
/// assert_eq!(seq.history_windows, 1); // window 3 is outside (6, 10]
/// assert!(seq.step(0).is_some() && seq.step(1).is_none() && seq.step(3).is_some()); // windows 7..=10
/// assert!(build_sequence(11, 4, &[(10, &s(10))]).is_none());
/// ```
pub fn build_sequence(
    window: u64,
    len: usize,
    history: &[(u64, &WindowSummary)],
) -> Option<Sequence> {
    let len = len.max(1);
    let mut slots: Vec<Option<&WindowSummary>> = vec![None; len];
    for (w, s) in history {
        if *w <= window && window - *w < len as u64 {
            slots[len - 1 - (window - *w) as usize] = Some(*s);
        }
    }
    let current = slots[len - 1]?;
    let mut features = vec![0f32; len * NUM_FEATURES];
    let mut prev: Option<&WindowSummary> = None;
    for (slot, x) in slots.iter().zip(features.chunks_exact_mut(NUM_FEATURES)) {
        if let Some(s) = slot {
            let base = s.base.as_slice();
            x[..base.len()].copy_from_slice(base);
            if let Some(p) = prev {
                x[VELOCITY_EVENTS] = ln1p(s.events) - ln1p(p.events);
                x[VELOCITY_BYTES] = ln1p(s.bytes) - ln1p(p.bytes);
            }
            prev = Some(s);
        }
    }
    let active: Vec<bool> = slots.iter().map(Option::is_some).collect();
    let history_windows = active.iter().filter(|a| **a).count() as u32 - 1;
    Some(Sequence {
        window,
        features: Vector(features),
        active,
        history_windows,
        events: current.events,
        bytes: current.bytes,
        authenticated: current.authenticated,
        segment: current.segment.clone(),
        context: current.context.clone(),
        demand: current.demand.clone(),
    })
}

fn ln1p(v: u64) -> f32 {
    (v as f64).ln_1p() as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::features::{WindowAgg, NUM_BASE_FEATURES};
    use crate::{Event, WindowSpec};

    fn summary(w: u64, events: usize) -> WindowSummary {
        let mut agg = WindowAgg::empty();
        for i in 0..events {
            agg.add(&Event::new(w as i64 * 60_000 + i as i64, "u", "a"));
        }
        WindowSummary::new(&agg, w, &WindowSpec::default())
    }

    #[test]
    fn velocity_compares_with_previous_active_step() {
        let (a, b) = (summary(5, 1), summary(8, 7));
        let seq = build_sequence(8, 16, &[(8, &b), (5, &a)]).unwrap();
        let cur = seq.current();
        assert_eq!(cur.len(), NUM_FEATURES);
        assert!((cur[VELOCITY_EVENTS] - (8f32.ln() - 2f32.ln())).abs() < 1e-6);
        let first = seq.step(16 - 4).unwrap();
        assert_eq!(first[VELOCITY_EVENTS], 0.0, "no earlier active step");
        assert_eq!(&cur[..NUM_BASE_FEATURES], b.base.as_slice());
        assert_eq!(seq.active_steps().count(), 2);
        assert!(seq.step(16 - 3).is_none());
        assert_eq!(seq.history_windows, 1);
        assert_eq!(seq.events, 7);
    }

    #[test]
    fn early_windows_do_not_underflow() {
        let s = summary(1, 2);
        let seq = build_sequence(1, 16, &[(1, &s)]).unwrap();
        assert_eq!(seq.len(), 16);
        assert_eq!(seq.features.len(), 16 * NUM_FEATURES);
        assert_eq!(seq.history_windows, 0);
    }
}
