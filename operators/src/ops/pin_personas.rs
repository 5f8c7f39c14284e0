//! `pin_personas`: the persona each user counts for in persona drift, held fixed for a while
//! (DESIGN.md step 8).
//!
//! Personas are re-fitted every window, so a persona's members change as its centroid moves:
//! a persona whose members are taken afresh each window drifts without any user changing. Persona
//! drift instead follows a cohort: a user counts for the persona it was assigned when first seen,
//! for `pin` windows; then the user's assignment at that window pins it again.

use crate::features::Fnv;
use crate::ops::batch::BatchByWindow;
use crate::ops::UserWindow;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use timely::dataflow::channels::pact::Exchange;

/// Each user's pinned persona and the window it was pinned at.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinState {
    /// User -> (persona, window pinned at).
    pub pins: BTreeMap<String, (u32, u64)>,
}

/// The pinned personas of the users assigned at `window`: the plain function behind
/// [`PinPersonas::pin_personas`]. A user's pin lasts `pin` windows (at least 1) from the window it
/// was taken at; a user without a live pin is pinned to its assignment now.
///
/// ```
/// use personaflow_operators::ops::pin_personas::{pin_window, PinState};
/// let mut state = PinState::default();
/// let a = |p: u32| vec![("u".to_string(), p)];
/// assert_eq!(pin_window(&mut state, 0, &a(3), 10), a(3));
/// // Re-assigned at window 5: still counted for persona 3 until window 10.
/// assert_eq!(pin_window(&mut state, 5, &a(1), 10), a(3));
/// assert_eq!(pin_window(&mut state, 10, &a(1), 10), a(1));
/// ```
pub fn pin_window(
    state: &mut PinState,
    window: u64,
    assignments: &[(String, u32)],
    pin: u64,
) -> Vec<(String, u32)> {
    let pin = pin.max(1);
    // Expired pins behave as absent ones; dropping them now and then bounds the state.
    if window % pin == 0 {
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
    /// in [`WindowAggregate`](super::WindowAggregate)), which keeps their pins and applies the
    /// windows in order.
    ///
    /// ```
    /// use differential_dataflow::input::Input;
    /// use personaflow_operators::ops::pin_personas::PinPersonas;
    /// use std::sync::{Arc, Mutex};
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let sink = seen.clone();
    /// timely::example(move |scope| {
    ///     let (mut input, assignments) = scope.new_collection::<((String, u64), u32), isize>();
    ///     assignments
    ///         .pin_personas(2)
    ///         .inspect(move |(((_, w), p), _, _)| sink.lock().unwrap().push((*w, *p)));
    ///     for (w, p) in [(0u64, 7u32), (1, 4), (2, 4)] {
    ///         input.insert((("u1".to_string(), w), p));
    ///         input.advance_to(w + 1);
    ///     }
    /// });
    /// // Pinned to 7 for windows 0 and 1; re-pinned at window 2.
    /// assert_eq!(*seen.lock().unwrap(), vec![(0, 7), (1, 7), (2, 4)]);
    /// ```
    fn pin_personas(self, pin: u64) -> VecCollection<'scope, u64, (UserWindow, u32), isize>;
}

impl<'scope> PinPersonas<'scope> for VecCollection<'scope, u64, (UserWindow, u32), isize> {
    fn pin_personas(self, pin: u64) -> VecCollection<'scope, u64, (UserWindow, u32), isize> {
        let mut state = PinState::default();
        self.fold_by_window(
            Exchange::new(|(((user, _), _), _, _): &((UserWindow, u32), u64, isize)| {
                Fnv::hash_str(user)
            }),
            "PinPersonas",
            move |window, assignments, out| {
                let plain: Vec<(String, u32)> = assignments
                    .into_iter()
                    .map(|((user, _), persona)| (user, persona))
                    .collect();
                out.extend(
                    pin_window(&mut state, window, &plain, pin)
                        .into_iter()
                        .map(|(user, persona)| ((user, window), persona)),
                );
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
        let a = |xs: &[(&str, u32)]| -> Vec<(String, u32)> {
            xs.iter().map(|(u, p)| (u.to_string(), *p)).collect()
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
