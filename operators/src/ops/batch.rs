//! `fold_by_window` and `batch_by_windows`: the per-window batching shared by the operators that
//! hand whole windows to a model ([`EmbedProfiles`](super::EmbedProfiles),
//! [`ForecastDemand`](super::ForecastDemand)) or to a fold over windows (sequences, personas,
//! pins, drift, the policies' calibration).

use crate::ops::consolidate;
use differential_dataflow::{AsCollection, VecCollection};
use std::collections::BTreeMap;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{ParallelizationContract, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

/// Hands each complete window's new records to a closure, all at once.
pub(crate) trait BatchByWindow<'scope, D> {
    /// Buffers the updates of each window (timestamp), after they travel by `pact` (e.g. all
    /// to one worker, or by a key); once the input frontier passes a window, nets its updates
    /// and calls `logic` once with the window and the records inserted at it (positive net
    /// count; each record once, in order). Windows are handed on in order, so `logic` may carry
    /// state from one window to the next. Every record that `logic` pushes to its output buffer
    /// is emitted as a fact at that window. The operator is called `name` in the dataflow graph.
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

    /// As [`fold_by_window`](Self::fold_by_window), records staying on their worker, but every
    /// window complete at one activation goes to `logic` in one call, as `(window, records)` in
    /// window order: a run of
    /// windows sent at one time (the backfill's runs, a continuous job's poll round) arrives
    /// whole, so a model sees batches as full as the run allows rather than one window's worth.
    /// `logic` pushes `(window, output)` pairs, each window one it was handed; each output is
    /// emitted as a fact at its window.
    fn batch_by_windows<O, L>(self, name: &str, logic: L) -> VecCollection<'scope, u64, O, isize>
    where
        O: Clone + 'static,
        L: FnMut(Vec<(u64, Vec<D>)>, &mut Vec<(u64, O)>) + 'static;
}

/// A window's capability and its updates so far.
type Pending<D> = BTreeMap<u64, (Capability<u64>, Vec<(D, isize)>)>;

impl<'scope, D: Ord + Clone + 'static> BatchByWindow<'scope, D>
    for VecCollection<'scope, u64, D, isize>
{
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
        let mut produced = Vec::new();
        complete_windows(self, pact, name, move |windows, out| {
            for (time, records) in windows {
                logic(time, records, &mut produced);
                out.extend(produced.drain(..).map(|o| (time, o)));
            }
        })
    }

    fn batch_by_windows<O, L>(self, name: &str, logic: L) -> VecCollection<'scope, u64, O, isize>
    where
        O: Clone + 'static,
        L: FnMut(Vec<(u64, Vec<D>)>, &mut Vec<(u64, O)>) + 'static,
    {
        complete_windows(self, Pipeline, name, logic)
    }
}

/// The operator behind [`BatchByWindow`]: buffers each window's updates; at each activation
/// nets those of every window the input frontier has passed and calls `logic` once with their
/// inserted records, `(window, records)` in window order (none if no window completed); emits
/// each `(window, output)` it pushes as a fact at that window.
fn complete_windows<'scope, D, P, O, L>(
    records: VecCollection<'scope, u64, D, isize>,
    pact: P,
    name: &str,
    mut logic: L,
) -> VecCollection<'scope, u64, O, isize>
where
    D: Ord + Clone + 'static,
    P: ParallelizationContract<u64, Vec<(D, u64, isize)>>,
    O: Clone + 'static,
    L: FnMut(Vec<(u64, Vec<D>)>, &mut Vec<(u64, O)>) + 'static,
{
    records
        .inner
        .unary_frontier::<CapacityContainerBuilder<Vec<_>>, _, _, _>(
            pact,
            name,
            move |_cap, _info| {
                let mut pending: Pending<D> = BTreeMap::new();
                let mut produced: Vec<(u64, O)> = Vec::new();
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
                    let mut caps = Vec::new();
                    let mut windows = Vec::new();
                    while let Some(entry) = pending.first_entry() {
                        let time = *entry.key();
                        if frontier.less_equal(&time) {
                            break;
                        }
                        let (cap, mut updates) = entry.remove();
                        // Net the window's updates: only records inserted at this window (and
                        // not retracted within it) are handed on.
                        consolidate(&mut updates);
                        let records: Vec<D> = updates
                            .into_iter()
                            .filter(|(_, r)| *r > 0)
                            .map(|(d, _)| d)
                            .collect();
                        caps.push((time, cap));
                        windows.push((time, records));
                    }
                    if !windows.is_empty() {
                        logic(windows, &mut produced);
                        // Outputs by window, in the order pushed within each.
                        produced.sort_by_key(|(time, _)| *time);
                        let mut outputs = produced.drain(..).peekable();
                        while let Some(&(time, _)) = outputs.peek() {
                            let cap = caps
                                .iter()
                                .find(|(t, _)| *t == time)
                                .map(|(_, cap)| cap)
                                .expect("logic emits only at the windows it was handed");
                            let mut session = output.session(cap);
                            while let Some((t, o)) = outputs.next_if(|(t, _)| *t == time) {
                                session.give((o, t, 1isize));
                            }
                        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use differential_dataflow::input::Input;
    use std::sync::{Arc, Mutex};

    /// What one call was handed.
    type Windows = Vec<(u64, Vec<&'static str>)>;

    #[test]
    fn hands_on_each_complete_window_netted_once() {
        let calls: Arc<Mutex<Vec<Windows>>> = Arc::default();
        let outputs: Arc<Mutex<Vec<(usize, u64, isize)>>> = Arc::default();
        let (c, o) = (calls.clone(), outputs.clone());
        timely::example(move |scope| {
            let (mut input, records) = scope.new_collection::<&'static str, isize>();
            records
                .batch_by_windows("Test", move |windows: Windows, out| {
                    out.extend(windows.iter().map(|(w, batch)| (*w, batch.len())));
                    c.lock().unwrap().push(windows);
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
        // Window 3 retracts "a": not an insertion. "c" twice is handed on once. Both windows
        // are complete once the input closes: one call, in window order.
        assert_eq!(
            *calls.lock().unwrap(),
            vec![vec![(0, vec!["a", "b"]), (3, vec!["c"])]]
        );
        assert_eq!(*outputs.lock().unwrap(), vec![(2, 0, 1), (1, 3, 1)]);
    }

    #[test]
    fn a_window_completed_alone_is_handed_on_alone() {
        let calls: Arc<Mutex<Vec<Vec<u64>>>> = Arc::default();
        let (c, seen) = (calls.clone(), calls.clone());
        timely::execute_directly(move |worker| {
            let mut input = worker.dataflow::<u64, _, _>(|scope| {
                let (input, records) = scope.new_collection::<u32, isize>();
                records.batch_by_windows("Test", move |windows: Vec<(u64, Vec<u32>)>, out| {
                    c.lock()
                        .unwrap()
                        .push(windows.iter().map(|(w, _)| *w).collect());
                    out.extend(windows.into_iter().map(|(w, r)| (w, r.len())));
                });
                input
            });
            for w in 0..3u64 {
                input.advance_to(w);
                input.insert(w as u32);
                input.advance_to(w + 1);
                input.flush();
                // Each window is complete before the next one's record is sent.
                worker.step_while(|| seen.lock().unwrap().len() <= w as usize);
            }
        });
        assert_eq!(*calls.lock().unwrap(), vec![vec![0], vec![1], vec![2]]);
    }
}
