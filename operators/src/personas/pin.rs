//! `pin_personas`: the persona each user counts for in persona drift, held fixed for a while
//! (DESIGN.md step 8).
//!
//! Personas are re-fitted every window, so a persona's members change as its centroid moves:
//! a persona whose members are taken afresh each window drifts without any user changing. Persona
//! drift instead follows a cohort: a user counts for the persona it was assigned when first seen,
//! for `pin` windows; then the user's assignment at that window pins it again.

use crate::ops::batch::BatchByWindow;
use crate::ops::{user_hash, worker_of, Snapshots, UserId, UserWindow};
use crate::{Error, Result};
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use timely::dataflow::channels::pact::Exchange;

/// Each user's pinned persona and the window it was pinned at.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinState {
    /// User -> (persona, window pinned at).
    pub pins: BTreeMap<UserId, (u32, u64)>,
}

/// Pin states after each window, for checkpoints (this worker's users).
pub type PinSnapshots = Snapshots<PinState>;

impl PinState {
    /// The pins of the users worker `index` of `peers` keeps ([`PinPersonas::pin_personas`]
    /// sends each user to the worker of its hash).
    pub fn owned_by(&self, index: usize, peers: usize) -> PinState {
        PinState {
            pins: self
                .pins
                .iter()
                .filter(|(u, _)| worker_of(user_hash(u), peers) == index)
                .map(|(u, p)| (u.clone(), *p))
                .collect(),
        }
    }

    /// The union of the pins of disjoint sets of users (each worker's part): an error names a
    /// user two parts hold.
    ///
    /// ```
    /// use personaflow_operators::personas::pin::PinState;
    /// let mut whole = PinState::default();
    /// whole.pins.insert("u1".into(), (3, 0));
    /// whole.pins.insert("u2".into(), (1, 4));
    /// let parts: Vec<PinState> = (0..2).map(|i| whole.owned_by(i, 2)).collect();
    /// assert_eq!(PinState::merge(parts.clone()).unwrap(), whole);
    /// assert!(PinState::merge([whole.clone(), whole]).is_err());
    /// ```
    pub fn merge(parts: impl IntoIterator<Item = PinState>) -> Result<PinState> {
        let mut all = PinState::default();
        for part in parts {
            for (user, pin) in part.pins {
                if all.pins.insert(user.clone(), pin).is_some() {
                    return Err(Error::StateOverlap(format!("pinned user {user:?}")));
                }
            }
        }
        Ok(all)
    }
}

/// The pinned personas of the users assigned at `window`: the plain function behind
/// [`PinPersonas::pin_personas`]. A user's pin lasts `pin` windows (at least 1) from the window it
/// was taken at; a user without a live pin is pinned to its assignment now.
///
/// ```
/// use personaflow_operators::ops::UserId;
/// use personaflow_operators::personas::pin::{pin_window, PinState};
/// let mut state = PinState::default();
/// let a = |p: u32| -> Vec<(UserId, u32)> { vec![("u".into(), p)] };
/// assert_eq!(pin_window(&mut state, 0, &a(3), 10), a(3));
/// // Re-assigned at window 5: still counted for persona 3 until window 10.
/// assert_eq!(pin_window(&mut state, 5, &a(1), 10), a(3));
/// assert_eq!(pin_window(&mut state, 10, &a(1), 10), a(1));
/// ```
pub fn pin_window(
    state: &mut PinState,
    window: u64,
    assignments: &[(UserId, u32)],
    pin: u64,
) -> Vec<(UserId, u32)> {
    let pin = pin.max(1);
    // Expired pins behave as absent ones; dropping them now and then bounds the state.
    if window.is_multiple_of(pin) {
        state
            .pins
            .retain(|_, (_, since)| window < since.saturating_add(pin));
    }
    assignments
        .iter()
        .map(|(user, persona)| {
            let entry = state.pins.entry(user.clone()).or_insert((*persona, window));
            if window >= entry.1.saturating_add(pin) {
                *entry = (*persona, window);
            }
            (user.clone(), entry.0)
        })
        .collect()
}

/// Pins personas.
pub trait PinPersonas<'scope> {
    /// For each user's persona assignment at each window, the persona the user is pinned to
    /// ([`pin_window`]), as a fact at that window. Users travel to the worker of their hash (as
    /// in [`WindowAggregate`](crate::ops::WindowAggregate)), which keeps their pins and applies the
    /// windows in order. `initial` `(w, state)` resumes from the pins as of the end of window
    /// `w` (this worker's part: [`PinState::owned_by`]), skipping windows up to `w`. With
    /// `snapshots`, the pins are kept there after each window (and the initial ones at `w`),
    /// where a checkpoint takes them ([`Snapshots`]).
    ///
    /// ```
    /// use differential_dataflow::input::Input;
    /// use personaflow_operators::ops::UserId;
    /// use personaflow_operators::personas::pin::PinPersonas;
    /// use std::sync::{Arc, Mutex};
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let sink = seen.clone();
    /// timely::example(move |scope| {
    ///     let (mut input, assignments) = scope.new_collection::<((UserId, u64), u32), isize>();
    ///     assignments
    ///         .pin_personas(2, None, None)
    ///         .inspect(move |(((_, w), p), _, _)| sink.lock().unwrap().push((*w, *p)));
    ///     for (w, p) in [(0u64, 7u32), (1, 4), (2, 4)] {
    ///         input.insert((("u1".into(), w), p));
    ///         input.advance_to(w + 1);
    ///     }
    /// });
    /// // Pinned to 7 for windows 0 and 1; re-pinned at window 2.
    /// assert_eq!(*seen.lock().unwrap(), vec![(0, 7), (1, 7), (2, 4)]);
    /// ```
    fn pin_personas(
        self,
        pin: u64,
        initial: Option<(u64, PinState)>,
        snapshots: Option<PinSnapshots>,
    ) -> VecCollection<'scope, u64, (UserWindow, u32), isize>;
}

impl<'scope> PinPersonas<'scope> for VecCollection<'scope, u64, (UserWindow, u32), isize> {
    fn pin_personas(
        self,
        pin: u64,
        initial: Option<(u64, PinState)>,
        snapshots: Option<PinSnapshots>,
    ) -> VecCollection<'scope, u64, (UserWindow, u32), isize> {
        let (resume_after, mut state) = match initial {
            Some((w, s)) => (Some(w), s),
            None => (None, PinState::default()),
        };
        if let (Some(w), Some(s)) = (resume_after, &snapshots) {
            s.borrow_mut().insert(w, state.clone());
        }
        self.fold_by_window(
            Exchange::new(|(((user, _), _), _, _): &((UserWindow, u32), u64, isize)| {
                user_hash(user)
            }),
            "PinPersonas",
            move |window, assignments, out| {
                if resume_after.is_some_and(|r| window <= r) {
                    return;
                }
                let plain: Vec<(UserId, u32)> = assignments
                    .into_iter()
                    .map(|((user, _), persona)| (user, persona))
                    .collect();
                out.extend(
                    pin_window(&mut state, window, &plain, pin)
                        .into_iter()
                        .map(|(user, persona)| ((user, window), persona)),
                );
                if let Some(s) = &snapshots {
                    s.borrow_mut().insert(window, state.clone());
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_last_their_length_per_user_and_expired_ones_are_dropped() {
        let mut s = PinState::default();
        let a = |xs: &[(&str, u32)]| -> Vec<(UserId, u32)> {
            xs.iter().map(|(u, p)| ((*u).into(), *p)).collect()
        };
        assert_eq!(pin_window(&mut s, 0, &a(&[("a", 1)]), 3), a(&[("a", 1)]));
        // "b" is first seen at window 2: its pin runs 2..5, independent of "a"'s 0..3.
        assert_eq!(
            pin_window(&mut s, 2, &a(&[("a", 2), ("b", 5)]), 3),
            a(&[("a", 1), ("b", 5)])
        );
        assert_eq!(
            pin_window(&mut s, 3, &a(&[("a", 2), ("b", 6)]), 3),
            a(&[("a", 2), ("b", 5)])
        );
        assert_eq!(pin_window(&mut s, 5, &a(&[("b", 6)]), 3), a(&[("b", 6)]));
        // At window 6 (a multiple of the pin) expired pins are dropped: "a" (3..6) is gone.
        assert_eq!(pin_window(&mut s, 6, &[], 3), vec![]);
        assert!(!s.pins.contains_key("a") && s.pins.contains_key("b"));
        // A pin of 0 is taken as 1: every window re-pins.
        let mut s = PinState::default();
        assert_eq!(pin_window(&mut s, 0, &a(&[("a", 1)]), 0), a(&[("a", 1)]));
        assert_eq!(pin_window(&mut s, 1, &a(&[("a", 2)]), 0), a(&[("a", 2)]));
    }
}
