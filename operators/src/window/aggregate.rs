//! `window_aggregate`: events to per-user, per-window feature summaries (DESIGN.md step 2).

use crate::event::Event;
use crate::ops::{user_hash, UserId, UserWindow};
use crate::window::features::{WindowAgg, WindowSummary};
use crate::window::WindowSpec;
use differential_dataflow::{AsCollection, VecCollection};
use std::collections::{BTreeMap, HashMap};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

/// Pre-aggregates events into window summaries.
pub trait WindowAggregate<'scope> {
    /// Folds each user's events of a window into a [`WindowAgg`] (O(1) per event, state only
    /// for windows still open) and, once the input frontier passes the window, emits one fact
    /// `((user, window), WindowSummary)` at time `window`.
    ///
    /// Events must be sent at a timely time no later than their window
    /// ([`WindowSpec::index`] of their `ts_ms`), possibly the events of many windows at one
    /// time; they are exchanged by user.
    ///
    /// ```
    /// use personaflow_operators::{Event, WindowSpec};
    /// use personaflow_operators::ops::WindowAggregate;
    /// use timely::dataflow::operators::ToStream;
    /// timely::example(|scope| {
    ///     vec![Event::new(1_000, "u", "a"), Event::new(2_000, "u", "b")]
    ///         .to_stream(scope)
    ///         .container::<Vec<_>>()
    ///         .window_aggregate(WindowSpec::default())
    ///         .inspect(|(((user, w), s), t, r)| assert!(&**user == "u" && *w == 0 && s.events == 2 && *t == 0 && *r == 1));
    /// });
    /// ```
    fn window_aggregate(
        self,
        spec: WindowSpec,
    ) -> VecCollection<'scope, u64, (UserWindow, WindowSummary), isize>;
}

type Open = BTreeMap<u64, (Capability<u64>, HashMap<String, WindowAgg>)>;

impl<'scope> WindowAggregate<'scope> for StreamVec<'scope, u64, Event> {
    fn window_aggregate(
        self,
        spec: WindowSpec,
    ) -> VecCollection<'scope, u64, (UserWindow, WindowSummary), isize> {
        let exchange = Exchange::new(|e: &Event| user_hash(&e.user_id));
        self.unary_frontier::<CapacityContainerBuilder<Vec<_>>, _, _, _>(
            exchange,
            "WindowAggregate",
            move |_cap, _info| {
                let mut open: Open = BTreeMap::new();
                move |(input, frontier), output| {
                    input.for_each_time(|cap, data| {
                        for batch in data {
                            for event in batch.drain(..) {
                                let window = spec
                                    .index(event.ts_ms)
                                    .unwrap_or(*cap.time())
                                    .max(*cap.time());
                                let (_, users) = open
                                    .entry(window)
                                    .or_insert_with(|| (crate::ops::held(&cap), HashMap::new()));
                                match users.get_mut(event.user_id.as_str()) {
                                    Some(agg) => agg.add(&event),
                                    None => {
                                        let agg = WindowAgg::of(&event);
                                        users.insert(event.user_id, agg);
                                    }
                                }
                            }
                        }
                    });
                    while let Some(entry) = open.first_entry() {
                        let window = *entry.key();
                        if frontier.less_equal(&window) {
                            break;
                        }
                        let (cap, users) = entry.remove();
                        let mut session = output.session(&cap);
                        for (user, agg) in users {
                            let summary = WindowSummary::new(&agg, window, &spec);
                            // The key's one allocation: every copy downstream shares it.
                            let user: UserId = user.into();
                            session.give((((user, window), summary), window, 1isize));
                        }
                    }
                    crate::ops::follow_frontier(
                        open.values_mut().map(|(cap, _)| cap),
                        crate::ops::earliest([frontier]),
                    );
                }
            },
        )
        .as_collection()
    }
}
