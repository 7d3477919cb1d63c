//! Server specs: the TOML an operator applies, checked field by field.
//!
//! A spec is parsed into a TOML table and walked by hand rather than deserialized, so
//! that every problem is found in one pass and reported with its field path
//! (`restart.min_uptime: ...`, `adapters[1].port: ...`), not just the first.
//!
//! * [`model`] — the checked spec, as stored;
//! * [`parse`](parse()) + `checker` + `sections` + `extra` — parsing and checking;
//! * [`resources`] — `[resources]`, the limits of each instance's cgroup;
//! * [`render`] — templates; `export` — the spec back as TOML; `diff` — what an apply
//!   changes, in words; `proto` — the spec in the agent's form.

mod checker;
mod diff;
mod export;
mod extra;
pub mod files;
pub mod meta;
pub mod model;
mod parse;
mod proto;
pub mod render;
pub mod resources;
mod sections;

pub(crate) use checker::{Checker, check_name, type_name};
pub use checker::{PROBLEMS_SHOWN, SpecErrors};
pub use diff::describe_changes;
pub use export::to_toml;
pub use extra::{ConfigRestart, ConfigTemplate, Health};
pub use model::{Adapter, Restart, RunState, Spec, Stop, defaults};
pub use parse::{check_version, parse};

#[cfg(test)]
mod tests;
