//! `join_window`: joins two collections of facts within each window, with no state beyond it.

use crate::ops::consolidate;
use differential_dataflow::hashable::Hashable;
use differential_dataflow::{AsCollection, ExchangeData, VecCollection};
use std::collections::BTreeMap;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Capability, InputCapability};

/// Joins the facts of each window.
pub trait JoinWindow<'scope, K, A> {
    /// For each window `w`, once both inputs have passed it: every record `(k, a)` of this
    /// collection and `(k, b)` of `other` inserted at `w` (each side's updates of `w` netted;
    /// records with a positive count) give `(k, (a, b))` at `w`, with the product of their
    /// counts. Where no record of a window is also one of the window before (keys that carry
    /// their window, as [`UserWindow`](crate::ops::UserWindow) does), that is what
    /// `hold_for(1)` on both sides and differential's `join` insert at `w`, without their
    /// arrangements and without the retractions at `w + 1`, which made every window with
    /// facts a second, empty window for every operator downstream. Nothing is kept once a
    /// window is joined. Records travel to the worker of their key's hash.
    ///
    /// ```
    /// use differential_dataflow::input::Input;
    /// use personaflow_operators::ops::JoinWindow;
    /// use std::sync::{Arc, Mutex};
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let sink = seen.clone();
    /// timely::example(move |scope| {
    ///     let (mut left, l) = scope.new_collection::<(u8, u32), isize>();
    ///     let (mut right, r) = scope.new_collection::<(u8, char), isize>();
    ///     l.join_window(r).inspect(move |x| sink.lock().unwrap().push(x.clone()));
    ///     left.insert((1, 10));
    ///     right.insert((1, 'a'));
    ///     right.insert((2, 'b')); // no partner in window 0
    ///     left.advance_to(1);
    ///     right.advance_to(1);
    ///     left.insert((2, 20)); // window 1: does not meet window 0's (2, 'b')
    /// });
    /// assert_eq!(*seen.lock().unwrap(), vec![((1, (10, 'a')), 0, 1)]);
    /// ```
    fn join_window<B>(
        self,
        other: VecCollection<'scope, u64, (K, B), isize>,
    ) -> VecCollection<'scope, u64, (K, (A, B)), isize>
    where
        B: ExchangeData;

    /// As [`join_window`](Self::join_window), but records travel to the worker of
    /// `place(key)` (equal keys must place alike): e.g. [`by_user`](crate::ops::by_user), so
    /// that facts keyed by user and window stay on the worker that already holds the user.
    fn join_window_placed<B>(
        self,
        other: VecCollection<'scope, u64, (K, B), isize>,
        place: fn(&K) -> u64,
    ) -> VecCollection<'scope, u64, (K, (A, B)), isize>
    where
        B: ExchangeData;
}

/// Updates of one window: a record and its count.
type Updates<D> = Vec<(D, isize)>;

/// A window's capability and each side's updates so far.
type Window<K, A, B> = (Capability<u64>, Updates<(K, A)>, Updates<(K, B)>);

/// The windows not yet joined.
type Pending<K, A, B> = BTreeMap<u64, Window<K, A, B>>;

impl<'scope, K, A> JoinWindow<'scope, K, A> for VecCollection<'scope, u64, (K, A), isize>
where
    K: ExchangeData + Hashable,
    A: ExchangeData,
{
    fn join_window<B>(
        self,
        other: VecCollection<'scope, u64, (K, B), isize>,
    ) -> VecCollection<'scope, u64, (K, (A, B)), isize>
    where
        B: ExchangeData,
    {
        self.join_window_placed(other, |k| k.hashed().into())
    }

    fn join_window_placed<B>(
        self,
        other: VecCollection<'scope, u64, (K, B), isize>,
        place: fn(&K) -> u64,
    ) -> VecCollection<'scope, u64, (K, (A, B)), isize>
    where
        B: ExchangeData,
    {
        let left = Exchange::new(move |((k, _), _, _): &((K, A), u64, isize)| place(k));
        let right = Exchange::new(move |((k, _), _, _): &((K, B), u64, isize)| place(k));
        self.inner
            .binary_frontier::<_, CapacityContainerBuilder<Vec<_>>, _, _, _, _>(
                other.inner,
                left,
                right,
                "JoinWindow",
                move |_cap, _info| {
                    let mut pending: Pending<K, A, B> = BTreeMap::new();
                    move |(input1, frontier1), (input2, frontier2), output| {
                        input1.for_each_time(|cap, data| {
                            for (record, time, diff) in data.flat_map(|b| b.drain(..)) {
                                window(&mut pending, time, &cap).1.push((record, diff));
                            }
                        });
                        input2.for_each_time(|cap, data| {
                            for (record, time, diff) in data.flat_map(|b| b.drain(..)) {
                                window(&mut pending, time, &cap).2.push((record, diff));
                            }
                        });
                        while let Some(entry) = pending.first_entry() {
                            let time = *entry.key();
                            if frontier1.less_equal(&time) || frontier2.less_equal(&time) {
                                break;
                            }
                            let (cap, left, right) = entry.remove();
                            let joined = join_netted(left, right);
                            if !joined.is_empty() {
                                output
                                    .session(&cap)
                                    .give_iterator(joined.into_iter().map(|(d, r)| (d, time, r)));
                            }
                        }
                        super::follow_frontier(
                            pending.values_mut().map(|(cap, _, _)| cap),
                            super::earliest([frontier1, frontier2]),
                        );
                    }
                },
            )
            .as_collection()
    }
}

/// Window `time`'s entry, created with a capability for it from `cap` ([`super::held`]).
fn window<'a, K, A, B>(
    pending: &'a mut Pending<K, A, B>,
    time: u64,
    cap: &InputCapability<u64>,
) -> &'a mut Window<K, A, B> {
    pending
        .entry(time)
        .or_insert_with(|| (super::held(cap), Vec::new(), Vec::new()))
}

/// The join of one window's updates on each side: both netted, records with a positive count
/// matched by key, each match with the product of the counts (keys in order).
fn join_netted<K: Ord + Clone, A: Ord + Clone, B: Ord + Clone>(
    mut left: Updates<(K, A)>,
    mut right: Updates<(K, B)>,
) -> Updates<(K, (A, B))> {
    consolidate(&mut left);
    consolidate(&mut right);
    left.retain(|(_, r)| *r > 0);
    right.retain(|(_, r)| *r > 0);
    let mut out = Vec::new();
    let mut j = 0;
    for ((k, a), ra) in &left {
        while j < right.len() && right[j].0 .0 < *k {
            j += 1;
        }
        for ((kb, b), rb) in right[j..].iter().take_while(|((kb, _), _)| kb == k) {
            out.push(((kb.clone(), (a.clone(), b.clone())), ra * rb));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use differential_dataflow::input::Input;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use std::sync::{Arc, Mutex};

    #[test]
    fn netted_sides_match_by_key_with_the_product_of_counts() {
        let left = vec![
            (("a", 1), 1),
            (("b", 2), 1),
            (("b", 3), 2),
            (("c", 4), 1),
            (("c", 4), -1),
        ];
        let right = vec![
            (("b", 'x'), 1),
            (("b", 'y'), 1),
            (("c", 'z'), 1),
            (("d", 'w'), 1),
        ];
        assert_eq!(
            join_netted(left, right),
            vec![
                (("b", (2, 'x')), 1),
                (("b", (2, 'y')), 1),
                (("b", (3, 'x')), 2),
                (("b", (3, 'y')), 2),
            ]
        );
    }

    /// Oracle: on seeded random facts over 30 windows keyed with their window, arriving out of
    /// order and on two workers, the output at every window equals the net insertions of
    /// `hold_for(1)` on both sides and differential's `join` at that window.
    #[test]
    fn equals_held_join_at_every_window() {
        for seed in 0..4u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut facts: Vec<(u64, bool, u8, u16)> = Vec::new();
            for w in 0..30u64 {
                for _ in 0..rng.random_range(0..12) {
                    facts.push((
                        w,
                        rng.random_bool(0.5),
                        rng.random_range(0..6),
                        rng.random_range(0..4),
                    ));
                }
            }
            type Out = BTreeMap<u64, Vec<(((u64, u8), (u16, u16)), isize)>>;
            // Differential's held join; ours, records placed by the key's hash; ours, placed
            // by the key's second part alone (equal keys still meet).
            #[derive(Clone, Copy)]
            enum How {
                Held,
                Hashed,
                Placed,
            }
            let run = |how: How| -> Out {
                let got = Arc::new(Mutex::new(Vec::new()));
                let sink = got.clone();
                let facts = facts.clone();
                timely::execute(timely::Config::process(2), move |worker| {
                    let sink = sink.clone();
                    let index = worker.index();
                    let (mut l, mut r) = worker.dataflow::<u64, _, _>(|scope| {
                        let (l_in, l) = scope.new_collection::<((u64, u8), u16), isize>();
                        let (r_in, r) = scope.new_collection::<((u64, u8), u16), isize>();
                        let joined = match how {
                            How::Held => {
                                use crate::ops::Hold;
                                l.hold_for(1).join(r.hold_for(1))
                            }
                            How::Hashed => l.join_window(r),
                            How::Placed => l.join_window_placed(r, |(_, k)| u64::from(*k)),
                        };
                        joined.inspect(move |(d, t, diff)| {
                            sink.lock().unwrap().push((*t, *d, *diff))
                        });
                        (l_in, r_in)
                    });
                    // Each worker sends every other fact, later windows first within a batch of
                    // windows (out of order within what the input allows).
                    for chunk in facts.chunks(7).enumerate().filter(|(i, _)| i % 2 == index) {
                        let (_, chunk) = chunk;
                        for (w, side, k, v) in chunk.iter().rev() {
                            let input = if *side { &mut l } else { &mut r };
                            input.update_at(((*w, *k), *v), *w, 1);
                        }
                    }
                    l.close();
                    r.close();
                })
                .unwrap();
                let mut by_window: Out = BTreeMap::new();
                for (t, d, r) in got.lock().unwrap().drain(..) {
                    by_window.entry(t).or_default().push((d, r));
                }
                for updates in by_window.values_mut() {
                    consolidate(updates);
                    updates.retain(|(_, r)| *r > 0);
                }
                by_window.retain(|_, u| !u.is_empty());
                by_window
            };
            let (want, got) = (run(How::Held), run(How::Hashed));
            assert!(
                want.values().map(Vec::len).sum::<usize>() > 20,
                "seed {seed}: too few matches"
            );
            assert_eq!(got, want, "seed {seed}");
            assert_eq!(run(How::Placed), want, "seed {seed}, placed");
        }
    }
}
