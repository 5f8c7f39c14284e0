//! `sequences`: each active user's last `L` windows (DESIGN.md step 3).

use crate::ops::UserWindow;
use crate::sequences::{Sequence, SequenceHistories};
use crate::window::features::WindowSummary;
use differential_dataflow::hashable::Hashable;
use differential_dataflow::{AsCollection, VecCollection};
use std::collections::BTreeMap;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

/// Builds sequences from window summaries.
pub trait Sequences<'scope> {
    /// For every fact `((user, w), summary)`, the sequence of the user's last `len` windows
    /// ending at `w`: a fact too, inserted at `w` and never retracted. Each user's summaries
    /// of the last `len` windows are kept in a ring ([`SequenceHistories`]), so a user's new
    /// window costs one sequence whatever the windows in between; users are placed on workers
    /// by differential's hash of the user id.
    ///
    /// Summaries are facts: a retraction in the input is ignored.
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
    fn sequences(self, len: usize) -> VecCollection<'scope, u64, (UserWindow, Sequence), isize>;
}

type Pending = BTreeMap<u64, (Capability<u64>, Vec<(UserWindow, WindowSummary)>)>;

impl<'scope> Sequences<'scope> for VecCollection<'scope, u64, (UserWindow, WindowSummary), isize> {
    fn sequences(self, len: usize) -> VecCollection<'scope, u64, (UserWindow, Sequence), isize> {
        let exchange = Exchange::new(
            |(((user, _), _), _, _): &((UserWindow, WindowSummary), u64, isize)| user.hashed(),
        );
        self.inner
            .unary_frontier::<CapacityContainerBuilder<Vec<_>>, _, _, _>(
                exchange,
                "Sequences",
                move |_cap, _info| {
                    let mut pending: Pending = BTreeMap::new();
                    let mut histories = SequenceHistories::new(len);
                    move |(input, frontier), output| {
                        input.for_each_time(|cap, data| {
                            for batch in data {
                                for (record, time, diff) in batch.drain(..) {
                                    if diff > 0 {
                                        pending
                                            .entry(time)
                                            .or_insert_with(|| (cap.delayed(&time, 0), Vec::new()))
                                            .1
                                            .push(record);
                                    }
                                }
                            }
                        });
                        // Windows in order, each once complete: a user's history is pushed in
                        // window order.
                        while let Some(entry) = pending.first_entry() {
                            let time = *entry.key();
                            if frontier.less_equal(&time) {
                                break;
                            }
                            let (cap, records) = entry.remove();
                            let mut session = output.session(&cap);
                            for ((user, window), summary) in records {
                                let seq = histories.push(&user, window, summary);
                                session.give((((user, window), seq), time, 1isize));
                            }
                        }
                    }
                },
            )
            .as_collection()
    }
}
