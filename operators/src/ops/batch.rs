//! `batch_by_window`: the per-window batching shared by the operators that hand a whole window
//! to a model ([`EmbedProfiles`](super::EmbedProfiles), [`ForecastDemand`](super::ForecastDemand)).

use differential_dataflow::consolidation::consolidate;
use differential_dataflow::{AsCollection, VecCollection};
use std::collections::BTreeMap;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{ParallelizationContract, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

/// Hands each complete window's new records to a closure, all at once.
pub(crate) trait BatchByWindow<'scope, D> {
    /// Buffers the updates of each window (timestamp) on this worker; once the input frontier
    /// passes a window, nets its updates and calls `logic` once with the records inserted at
    /// it (positive net count; each record once, in order), in window order. Every record that
    /// `logic` pushes to its output buffer is emitted as a fact at that window. The operator is
    /// called `name` in the dataflow graph; records stay on their worker.
    fn batch_by_window<O, L>(self, name: &str, logic: L) -> VecCollection<'scope, u64, O, isize>
    where
        O: Clone + 'static,
        L: FnMut(Vec<D>, &mut Vec<O>) + 'static;

    /// As [`batch_by_window`](Self::batch_by_window), but the records travel by `pact` first
    /// (e.g. all to one worker, or by a key) and `logic` is told the window. Windows are handed
    /// on in order, so `logic` may carry state from one window to the next.
    fn fold_by_window<P, O, L>(
        self,
        pact: P,
        name: &str,
        logic: L,
    ) -> VecCollection<'scope, u64, O, isize>
    where
        P: ParallelizationContract<u64, Vec<(D, u64, isize)>>,
        O: Clone + 'static,
        L: FnMut(u64, Vec<D>, &mut Vec<O>) + 'static;
}

/// A window's capability and its updates so far.
type Pending<D> = BTreeMap<u64, (Capability<u64>, Vec<(D, isize)>)>;

impl<'scope, D: Ord + Clone + 'static> BatchByWindow<'scope, D>
    for VecCollection<'scope, u64, D, isize>
{
    fn batch_by_window<O, L>(self, name: &str, mut logic: L) -> VecCollection<'scope, u64, O, isize>
    where
        O: Clone + 'static,
        L: FnMut(Vec<D>, &mut Vec<O>) + 'static,
    {
        self.fold_by_window(Pipeline, name, move |_, records, out| logic(records, out))
    }

    fn fold_by_window<P, O, L>(
        self,
        pact: P,
        name: &str,
        mut logic: L,
    ) -> VecCollection<'scope, u64, O, isize>
    where
        P: ParallelizationContract<u64, Vec<(D, u64, isize)>>,
        O: Clone + 'static,
        L: FnMut(u64, Vec<D>, &mut Vec<O>) + 'static,
    {
        self.inner
            .unary_frontier::<CapacityContainerBuilder<Vec<_>>, _, _, _>(
                pact,
                name,
                move |_cap, _info| {
                    let mut pending: Pending<D> = BTreeMap::new();
                    let mut produced: Vec<O> = Vec::new();
                    move |(input, frontier), output| {
                        input.for_each_time(|cap, data| {
                            for batch in data {
                                for (record, time, diff) in batch.drain(..) {
                                    pending
                                        .entry(time)
                                        .or_insert_with(|| (super::held(&cap), Vec::new()))
                                        .1
                                        .push((record, diff));
                                }
                            }
                        });
                        while let Some(entry) = pending.first_entry() {
                            let time = *entry.key();
                            if frontier.less_equal(&time) {
                                break;
                            }
                            let (cap, mut updates) = entry.remove();
                            // Net the window's updates: only records inserted at this window
                            // (and not retracted within it) are handed on.
                            consolidate(&mut updates);
                            let records: Vec<D> = updates
                                .into_iter()
                                .filter(|(_, r)| *r > 0)
                                .map(|(d, _)| d)
                                .collect();
                            logic(time, records, &mut produced);
                            output
                                .session(&cap)
                                .give_iterator(produced.drain(..).map(|o| (o, time, 1isize)));
                        }
                        super::follow_frontier(
                            pending.values_mut().map(|(cap, _)| cap),
                            super::earliest([frontier]),
                        );
                    }
                },
            )
            .as_collection()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use differential_dataflow::input::Input;
    use std::sync::{Arc, Mutex};

    #[test]
    fn hands_on_each_complete_window_netted_once() {
        let calls: Arc<Mutex<Vec<Vec<&str>>>> = Arc::default();
        let outputs: Arc<Mutex<Vec<(usize, u64, isize)>>> = Arc::default();
        let (c, o) = (calls.clone(), outputs.clone());
        timely::example(move |scope| {
            let (mut input, records) = scope.new_collection::<&'static str, isize>();
            records
                .batch_by_window("Test", move |batch: Vec<&str>, out| {
                    out.push(batch.len());
                    c.lock().unwrap().push(batch);
                })
                .inspect(move |u| o.lock().unwrap().push(*u));
            input.insert("b");
            input.insert("a");
            input.insert("gone");
            input.remove("gone");
            input.advance_to(3);
            input.remove("a");
            input.insert("c");
            input.insert("c");
        });
        // Window 3 retracts "a": not an insertion. "c" twice is handed on once.
        assert_eq!(*calls.lock().unwrap(), vec![vec!["a", "b"], vec!["c"]]);
        assert_eq!(*outputs.lock().unwrap(), vec![(2, 0, 1), (1, 3, 1)]);
    }
}
