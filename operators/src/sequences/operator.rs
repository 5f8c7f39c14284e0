//! `sequences`: each active user's last `L` windows (DESIGN.md step 3).

use crate::ops::batch::BatchByWindow;
use crate::ops::{user_hash, UserWindow};
use crate::sequences::{
    HeldWindow, Sequence, SequenceHistories, SequenceSnapshots, SequenceSpec, SequenceState,
};
use crate::window::features::WindowSummary;
use differential_dataflow::VecCollection;
use timely::dataflow::channels::pact::Exchange;

/// Builds sequences from window summaries.
pub trait Sequences<'scope> {
    /// For every fact `((user, w), summary)`, the sequence `spec` describes ending at `w` (a
    /// length alone: the user's last `len` windows; see [`SequenceSpec`]): a fact too,
    /// inserted at `w` and never retracted. Each user's summaries a sequence may hold are kept
    /// in a ring ([`SequenceHistories`]), so a user's new window costs one sequence whatever
    /// the windows in between; users are placed on workers by differential's hash of the user
    /// id.
    ///
    /// Summaries are facts: each window's updates are netted and only the inserted ones used.
    ///
    /// ```
    /// use personaflow_operators::{Event, WindowSpec};
    /// use personaflow_operators::ops::{Sequences, WindowAggregate};
    /// use timely::dataflow::operators::ToStream;
    /// timely::example(|scope| {
    ///     vec![Event::new(1_000, "u", "a")]
    ///         .to_stream(scope)
    ///         .container::<Vec<_>>()
    ///         .window_aggregate(WindowSpec::default())
    ///         .sequences(4)
    ///         .inspect(|((_, seq), t, r)| assert!(seq.len() == 4 && *t == 0 && *r == 1));
    /// });
    /// ```
    fn sequences(
        self,
        spec: impl Into<SequenceSpec>,
    ) -> VecCollection<'scope, u64, (UserWindow, Sequence), isize>;

    /// As [`sequences`](Self::sequences), starting from this worker's rings `initial` (a
    /// checkpoint's, [`SequenceState::owned_by`]), and recording every window's pushes in
    /// `log` for checkpoints ([`SequenceLog`](crate::sequences::SequenceLog)).
    fn sequences_kept(
        self,
        spec: SequenceSpec,
        initial: Option<SequenceState>,
        log: Option<SequenceSnapshots>,
    ) -> VecCollection<'scope, u64, (UserWindow, Sequence), isize>;
}

impl<'scope> Sequences<'scope> for VecCollection<'scope, u64, (UserWindow, WindowSummary), isize> {
    fn sequences(
        self,
        spec: impl Into<SequenceSpec>,
    ) -> VecCollection<'scope, u64, (UserWindow, Sequence), isize> {
        self.sequences_kept(spec.into(), None, None)
    }

    fn sequences_kept(
        self,
        spec: SequenceSpec,
        initial: Option<SequenceState>,
        log: Option<SequenceSnapshots>,
    ) -> VecCollection<'scope, u64, (UserWindow, Sequence), isize> {
        let exchange = Exchange::new(
            |(((user, _), _), _, _): &((UserWindow, WindowSummary), u64, isize)| user_hash(user),
        );
        let mut histories = SequenceHistories::from_state(spec, initial.unwrap_or_default());
        // Windows in order, each once complete: a user's history is pushed in window order.
        self.fold_by_window(exchange, "Sequences", move |window, records, out| {
            let mut pushes = Vec::new();
            out.extend(records.into_iter().map(|((user, window), summary)| {
                if log.is_some() {
                    pushes.push((user.to_string(), HeldWindow::from(&summary)));
                }
                let seq = histories.push(&user, window, summary);
                ((user, window), seq)
            }));
            if let Some(log) = &log {
                log.borrow_mut().record(window, pushes);
            }
        })
    }
}
