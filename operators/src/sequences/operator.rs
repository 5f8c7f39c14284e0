//! `sequences`: each active user's last `L` windows (DESIGN.md step 3).

use crate::ops::{Hold, UserWindow};
use crate::sequences::{build_sequence, Sequence};
use crate::window::features::WindowSummary;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};

/// What the sequence reduction sees per user: a marker for the window the user is active in
/// (held one window) and the user's window summaries (held `L` windows).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum SeqValue {
    Current(u64),
    Step(u64, WindowSummary),
}

/// Builds sequences from window summaries.
pub trait Sequences<'scope> {
    /// For every fact `((user, w), summary)`, the sequence of the user's last `len` windows
    /// ending at `w`, present in the output during window `w` only (inserted at `w`,
    /// retracted at `w + 1`). Only users with a new window are touched at each time.
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
    ///         .inspect(|((_, seq), t, r)| assert!(seq.len() == 4 && (*t == 0 && *r == 1 || *t == 1 && *r == -1)));
    /// });
    /// ```
    fn sequences(self, len: usize) -> VecCollection<'scope, u64, (UserWindow, Sequence), isize>;
}

impl<'scope> Sequences<'scope> for VecCollection<'scope, u64, (UserWindow, WindowSummary), isize> {
    fn sequences(self, len: usize) -> VecCollection<'scope, u64, (UserWindow, Sequence), isize> {
        let len = len.max(1);
        let marks = self
            .clone()
            .map(|((user, w), _)| (user, SeqValue::Current(w)))
            .hold_for(1);
        let steps = self
            .map(|((user, w), s)| (user, SeqValue::Step(w, s)))
            .hold_for(len as u64);
        marks
            .concat(steps)
            .reduce_named("Sequences", move |_user, values, output| {
                let Some(current) = values.iter().find_map(|(v, r)| match v {
                    SeqValue::Current(w) if *r > 0 => Some(*w),
                    _ => None,
                }) else {
                    return;
                };
                let history: Vec<(u64, &WindowSummary)> = values
                    .iter()
                    .filter_map(|(v, r)| match v {
                        SeqValue::Step(w, s) if *r > 0 => Some((*w, s)),
                        _ => None,
                    })
                    .collect();
                if let Some(seq) = build_sequence(current, len, &history) {
                    output.push((seq, 1isize));
                }
            })
            .map(|(user, seq)| ((user, seq.window), seq))
    }
}
