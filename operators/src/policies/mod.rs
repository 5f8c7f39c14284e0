//! Policies: acting on profiles (DESIGN.md step 9). A persona catalogue ([`catalogue`]) is
//! blended by each user's probabilities into one network policy per user and window, sized
//! from the demand forecast ([`blend`]); the socket parameters the user's predicted behaviour
//! implies ([`socket`]); the link model that judges an allocation against the demand that
//! came, and the feedback it gives ([`link`]); a policy as a tc script and an nftables rule set
//! ([`render`]).
//!
//! Its operator: [`operator::ShapePolicies`] (parts gathered by user, risk calibrated by
//! segment, policies blended back on the user's worker).

pub mod blend;
pub mod catalogue;
pub mod link;
pub mod operator;
pub mod render;
pub mod socket;

pub use blend::{Policy, PolicyConfig};

/// A user's policy and socket profile of one window, shared: the records are large (several
/// hundred bytes, a dozen heap strings) and move through exchanges, sorts and sinks, where an
/// `Arc` moves as a pointer, and go to two consumers (the sinks and the feedback), where it is
/// cloned as a reference count rather than deeply.
pub type Shaped = std::sync::Arc<(Policy, SocketProfile)>;
pub use catalogue::PersonaCatalogue;
pub use operator::PolicyPart;
pub use socket::{RequestType, SocketProfile, WindowDemand};
