//! What the differential-dataflow operators share, and every operator's extension trait in one
//! place (each operator lives with its stage: [`crate::window::aggregate`],
//! [`crate::sequences::operator`], ...). Timestamps are window indexes (`u64`).
//!
//! A record's own time (differential's `(data, time, diff)`) is always the window it belongs
//! to; the timely time of the message carrying it may be earlier. A feeder may send the
//! events of a run of windows at one input time, the first window of the run (the backfill
//! does, so that timely tracks the progress of one time per run and not of every window with
//! data: see `personaflow_dataflow::driver`). So every operator buffers records by their own
//! time and handles a window once its input frontier has passed it, holds capabilities at
//! the times its messages came at (`held`), not at the windows, and after each activation
//! moves the capabilities it still holds up to its input frontier (`follow_frontier`), so
//! that what follows it never waits for a window it has no more records of. Fed a window at a
//! time, that comes to a capability at each window, as before runs; the continuous job sends
//! the events of each poll round at one time, which may also span windows. The oracle tests
//! feed both ways.
//!
//! Most collections here are *facts*: a record is inserted at the window it describes and is
//! never retracted by its producer. [`hold::Hold::hold_for`] gives facts a lifetime (inserted
//! at `w`, retracted at `w + n`), which is how every piece of state stays windowed: arrangements
//! only ever hold the last `max(L, W)` windows, so memory does not grow with history. Facts of
//! the same window are joined with [`join::JoinWindow::join_window`], which keeps nothing
//! beyond the window.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use timely::dataflow::operators::{Capability, InputCapability};
use timely::progress::frontier::MutableAntichain;

pub mod advance;
pub(crate) mod batch;
mod consolidate;
pub mod hold;
pub mod join;

pub use crate::drift::operator::DetectDrift;
pub use crate::embed::operator::{EmbedProfiles, ErrorSlot, Profile, ProfileData};
pub use crate::forecast::demand::ForecastDemand;
pub use crate::forecast::residuals::{ForecastErrors, ForecastErrorsBy, ScoredSink};
pub use crate::personas::operator::ClusterPersonas;
pub use crate::personas::pin::PinPersonas;
pub use crate::policies::operator::ShapePolicies;
pub use crate::resonance::operator::Resonate;
pub use crate::segments::operator::SegmentProfiles;
pub use crate::sequences::operator::Sequences;
pub use crate::window::aggregate::WindowAggregate;
pub use consolidate::consolidate;
pub use hold::Hold;
pub use join::JoinWindow;

/// A user id inside the dataflow: made once per user and window from the events' `String`
/// (`window_aggregate`) and shared by every copy of the records keyed by it (a stream's
/// records are copied for each of its consumers). Hashes, orders and prints as the string.
pub type UserId = std::sync::Arc<str>;

/// A user and a window index: the key of per-user, per-window records.
pub type UserWindow = (UserId, u64);

/// An operator's state after each window it processed, kept for checkpoints. A stateful
/// operator given snapshots inserts its state at the window it resumes after (its `initial`
/// state) and a copy after every window it is handed; a checkpoint takes the state it needs
/// with [`state_through`] and then drops older copies with [`prune_snapshots`].
pub type Snapshots<S> = Rc<RefCell<BTreeMap<u64, S>>>;

/// The state as of the end of `window`: the latest snapshot at or before it (an operator handed
/// no records in a window leaves its state as it was). `None`: no snapshot that old.
///
/// ```
/// use personaflow_operators::ops::{prune_snapshots, state_through, Snapshots};
/// let s: Snapshots<&str> = Snapshots::default();
/// s.borrow_mut().extend([(2, "after 2"), (5, "after 5"), (9, "after 9")]);
/// assert_eq!(state_through(&s, 1), None);
/// assert_eq!(state_through(&s, 7), Some("after 5"));
/// prune_snapshots(&s, 7);
/// assert_eq!(s.borrow().keys().copied().collect::<Vec<_>>(), vec![5, 9]);
/// ```
pub fn state_through<S: Clone>(snapshots: &Snapshots<S>, window: u64) -> Option<S> {
    snapshots
        .borrow()
        .range(..=window)
        .next_back()
        .map(|(_, s)| s.clone())
}

/// Drops the snapshots older than the one [`state_through`] returns for `window`.
pub fn prune_snapshots<S>(snapshots: &Snapshots<S>, window: u64) {
    let mut s = snapshots.borrow_mut();
    if let Some(&keep) = s.range(..=window).next_back().map(|(w, _)| w) {
        *s = s.split_off(&keep);
    }
}

/// A capability for the records of a window that came in a message with capability `cap`: at
/// the message's time, which is at or before the window (see the [module](self)). Outputs for
/// the window are sent with it, each record at its window.
pub(crate) fn held(cap: &InputCapability<u64>) -> Capability<u64> {
    cap.retain(0)
}

/// The earliest time any of `frontiers` may still deliver (`None`: every input has ended).
pub(crate) fn earliest<'a>(
    frontiers: impl IntoIterator<Item = &'a MutableAntichain<u64>>,
) -> Option<u64> {
    frontiers
        .into_iter()
        .filter_map(|f| f.frontier().first().copied())
        .min()
}

/// After an activation: moves each capability still `held` for a window the inputs have not
/// passed up to `frontier` (the inputs' [`earliest`] time), which is at or before every such
/// window; so an operator holding records of a later window (a fact's retraction, a forecast's
/// target) does not hold back what follows it in the windows before. With no frontier (every
/// input ended) nothing is held back any more and the capabilities stay as they are.
pub(crate) fn follow_frontier<'a>(
    held: impl IntoIterator<Item = &'a mut Capability<u64>>,
    frontier: Option<u64>,
) {
    let Some(f) = frontier else {
        return;
    };
    for cap in held {
        if *cap.time() < f {
            cap.downgrade(&f);
        }
    }
}

/// The exchange hash of a user's records: every operator that places records by user uses it
/// (differential's hash of the id), so a user's records stay on one worker from the window
/// aggregate through the sequences, profiles, persona pins and policies to the sinks, and
/// only the operators that place by something else (segment, persona model, scope) move them.
///
/// ```
/// use differential_dataflow::hashable::Hashable;
/// use personaflow_operators::ops::{user_hash, UserId};
/// let user: UserId = "u1".into();
/// assert_eq!(user_hash("u1"), user.hashed());
/// assert_eq!(user_hash("u1"), String::from("u1").hashed());
/// ```
pub fn user_hash(user: &str) -> u64 {
    use differential_dataflow::hashable::Hashable;
    user.hashed()
}

/// The exchange hash of a record keyed by user and window: its user's ([`user_hash`]), for
/// [`JoinWindow::join_window_placed`].
pub fn by_user((user, _): &UserWindow) -> u64 {
    user_hash(user)
}

/// The worker, of `peers`, that a record with exchange hash `hash` goes to (timely's exchange
/// takes the hash modulo the number of workers). Keyed operator state is split between workers
/// by it when a checkpoint is loaded, possibly by a different number of workers.
pub fn worker_of(hash: u64, peers: usize) -> usize {
    (hash % peers.max(1) as u64) as usize
}
