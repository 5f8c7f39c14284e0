//! `join_window`: a left join of two collections of facts on their key, window by window.

use differential_dataflow::consolidation::consolidate;
use differential_dataflow::{AsCollection, ExchangeData, VecCollection};
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

/// Joins facts of the same window.
pub trait JoinWindow<'scope, K, V> {
    /// For each fact `(k, v)` inserted at window `w`, one fact `(k, (v, o))` at `w`, where `o`
    /// is the fact of `other` with key `k` inserted at `w` (`None` if there is none; the first
    /// in order if there are several). Both sides travel to the worker of their key's hash;
    /// a window is joined once it is complete on both, and nothing is kept after it, so unlike
    /// a differential `join` of facts no arrangement grows with history.
    ///
    /// ```
    /// use differential_dataflow::input::Input;
    /// use personaflow_operators::ops::JoinWindow;
    /// timely::example(|scope| {
    ///     let (mut left, l) = scope.new_collection::<(u32, String), isize>();
    ///     let (mut right, r) = scope.new_collection::<(u32, i64), isize>();
    ///     l.join_window(r).inspect(|((k, (v, o)), _, _)| match k {
    ///         1 => assert_eq!((v.as_str(), *o), ("a", Some(10))),
    ///         _ => assert_eq!((*k, v.as_str(), *o), (2, "b", None)),
    ///     });
    ///     left.insert((1, "a".into()));
    ///     left.insert((2, "b".into()));
    ///     right.insert((1, 10));
    ///     right.insert((3, 30));
    /// });
    /// ```
    fn join_window<W>(
        self,
        other: VecCollection<'scope, u64, (K, W), isize>,
    ) -> VecCollection<'scope, u64, (K, (V, Option<W>)), isize>
    where
        W: ExchangeData + Ord;
}

type Pending<D> = BTreeMap<u64, (Option<Capability<u64>>, Vec<(D, isize)>)>;

fn key_hash<K: Hash>(k: &K) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    k.hash(&mut h);
    h.finish()
}

fn netted<D: Ord>(mut updates: Vec<(D, isize)>) -> Vec<D> {
    consolidate(&mut updates);
    updates
        .into_iter()
        .filter(|(_, r)| *r > 0)
        .map(|(d, _)| d)
        .collect()
}

impl<'scope, K, V> JoinWindow<'scope, K, V> for VecCollection<'scope, u64, (K, V), isize>
where
    K: ExchangeData + Ord + Hash,
    V: ExchangeData + Ord,
{
    fn join_window<W>(
        self,
        other: VecCollection<'scope, u64, (K, W), isize>,
    ) -> VecCollection<'scope, u64, (K, (V, Option<W>)), isize>
    where
        W: ExchangeData + Ord,
    {
        let left_pact = Exchange::new(|((k, _), _, _): &((K, V), u64, isize)| key_hash(k));
        let right_pact = Exchange::new(|((k, _), _, _): &((K, W), u64, isize)| key_hash(k));
        self.inner
            .binary_frontier::<_, CapacityContainerBuilder<Vec<_>>, _, _, _, _>(
                other.inner,
                left_pact,
                right_pact,
                "JoinWindow",
                move |_cap, _info| {
                    let mut left: Pending<(K, V)> = BTreeMap::new();
                    let mut right: BTreeMap<u64, Vec<((K, W), isize)>> = BTreeMap::new();
                    move |(left_input, left_frontier), (right_input, right_frontier), output| {
                        left_input.for_each_time(|cap, data| {
                            for batch in data {
                                for (d, t, r) in batch.drain(..) {
                                    let entry = left.entry(t).or_insert((None, Vec::new()));
                                    entry.0.get_or_insert_with(|| cap.delayed(&t, 0));
                                    entry.1.push((d, r));
                                }
                            }
                        });
                        right_input.for_each_time(|_cap, data| {
                            for batch in data {
                                for (d, t, r) in batch.drain(..) {
                                    right.entry(t).or_default().push((d, r));
                                }
                            }
                        });
                        while let Some(entry) = left.first_entry() {
                            let t = *entry.key();
                            if left_frontier.less_equal(&t) || right_frontier.less_equal(&t) {
                                break;
                            }
                            let (cap, updates) = entry.remove();
                            let mut others: BTreeMap<K, W> = BTreeMap::new();
                            for (k, w) in netted(right.remove(&t).unwrap_or_default()) {
                                others.entry(k).or_insert(w);
                            }
                            let cap = cap.expect("a pending window has a capability");
                            let mut session = output.session(&cap);
                            for (k, v) in netted(updates) {
                                let o = others.get(&k).cloned();
                                session.give(((k, (v, o)), t, 1isize));
                            }
                        }
                        // Stale right-hand windows below both frontiers (no left facts came).
                        while let Some(entry) = right.first_entry() {
                            let t = *entry.key();
                            if right_frontier.less_equal(&t) || left_frontier.less_equal(&t) {
                                break;
                            }
                            entry.remove();
                        }
                    }
                },
            )
            .as_collection()
    }
}
