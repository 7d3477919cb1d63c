//! Config files that converge.
//!
//! The registry renders each instance's config files ([`instance`]) and delivers them
//! to its agent through the desired state; the database keeps what each instance was
//! given (`instance_configs`), so every replica sends the same files. Files are rendered:
//!
//! * at `apply` and `expand`, for every instance with its real values, as a check that
//!   changes nothing when a template fails ([`check`]);
//! * by a session, the first time an instance needs them and whenever its spec changes
//!   (the agent restarts it for the spec anyway);
//! * by the renderer ([`renderer`], one replica at a time), whenever what they read
//!   changes: delivered once they have settled, at once when they do not restart the
//!   instance, in rolling batches behind health when they do, with the registry's own
//!   restarts frozen out of what they list ([`freeze`]), and held when they still restart
//!   an instance too often ([`plan`]).

pub mod check;
pub mod freeze;
pub mod instance;
mod pass;
pub mod plan;
pub mod renderer;
