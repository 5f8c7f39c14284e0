//! `hold_for`: gives facts a lifetime of `n` windows.

use differential_dataflow::{AsCollection, VecCollection};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

/// Gives a collection of facts a lifetime.
pub trait Hold<'scope, D> {
    /// Every insertion `(d, t, +r)` stays in the output for `windows` windows: it is emitted at
    /// `t` and retracted at `t + windows`. Retractions in the input are dropped, so the input
    /// should be a collection of facts (or a pulse whose retractions are not wanted).
    ///
    /// ```
    /// use differential_dataflow::input::Input;
    /// use personaflow_operators::ops::Hold;
    /// timely::example(|scope| {
    ///     let (mut input, facts) = scope.new_collection::<&str, isize>();
    ///     facts.hold_for(3).inspect(|x| assert!(x.1 == 0 && x.2 == 1 || x.1 == 3 && x.2 == -1));
    ///     input.insert("fact");
    /// });
    /// ```
    fn hold_for(self, windows: u64) -> VecCollection<'scope, u64, D, isize>;
}

impl<'scope, D: Clone + 'static> Hold<'scope, D> for VecCollection<'scope, u64, D, isize> {
    fn hold_for(self, windows: u64) -> VecCollection<'scope, u64, D, isize> {
        self.inner
            .unary::<CapacityContainerBuilder<Vec<(D, u64, isize)>>, _, _, _>(
                Pipeline,
                "HoldFor",
                move |_cap, _info| {
                    move |input, output| {
                        input.for_each_time(|cap, data| {
                            let mut session = output.session(&cap);
                            for batch in data {
                                for (d, t, r) in batch.drain(..) {
                                    if r > 0 {
                                        session.give((d.clone(), t, r));
                                        session.give((d, t + windows, -r));
                                    }
                                }
                            }
                        });
                    }
                },
            )
            .as_collection()
    }
}
