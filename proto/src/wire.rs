//! The wire's enums ([`crate::v1`], from `types.proto`) and the names Corral shows them
//! by (`crash-looping`, `on-failure`), both ways; and reading an enum field so that a
//! number the receiver does not know — or 0, a field left out — is an error naming the
//! field, never a default. (prost's getters return the default for such numbers; the
//! code does not call them.)

use std::fmt;

use crate::v1::{
    AuditOutcome, EventKind, HealthKind, HealthStatus, InstallState, InstanceState, NodeState,
    OnChange, RestartKind, RolloutPhase, RolloutState, RunState, SecretScopeKind, ServerAction,
};

/// An enum field whose number the receiver does not know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unknown {
    /// The field, e.g. "InstanceStatus.state".
    pub field: &'static str,
    pub value: i32,
}

impl fmt::Display for Unknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value == 0 {
            write!(f, "{} is not set", self.field)
        } else {
            write!(
                f,
                "{} is {}, a value this version of Corral does not know (is the other side newer?)",
                self.field, self.value
            )
        }
    }
}

impl std::error::Error for Unknown {}

/// An enum of the wire with its names.
pub trait Named: Sized + Copy + TryFrom<i32> + 'static {
    /// The name Corral shows (and the registry stores) for the value.
    fn name(self) -> &'static str;
    /// The value of a name; None for one that is not.
    fn from_name(name: &str) -> Option<Self>;
    /// Every value, for listings and messages.
    fn all() -> &'static [Self];
}

/// The value of an enum field: an error for 0 (not set) or a number not known here.
pub fn known<T: Named>(field: &'static str, value: i32) -> Result<T, Unknown> {
    if value == 0 {
        return Err(Unknown { field, value });
    }
    T::try_from(value).map_err(|_| Unknown { field, value })
}

/// The number of a name, for setting a field from what the database or a user holds; an
/// error naming the field and the names it takes for one that is not a name.
pub fn from_name<T: Named + Into<i32>>(field: &'static str, name: &str) -> Result<i32, String> {
    T::from_name(name).map(Into::into).ok_or_else(|| {
        let names: Vec<&str> = T::all().iter().map(|v| v.name()).collect();
        format!(
            "{field}: {:?} is not one of {}",
            crate::text::prefix(name, 64),
            names.join(", ")
        )
    })
}

/// The number of a name the sender holds in its own store (checked when it was
/// written): 0 for one that is not a name, which receivers refuse as "not set" — an
/// error they report, never a default they take.
pub fn number<T: Named + Into<i32>>(name: &str) -> i32 {
    T::from_name(name).map_or(0, Into::into)
}

/// The name of a field's number, or `?N` for one that is not known (for display only:
/// receivers that act on a value use [`known`]).
pub fn name_of<T: Named>(value: i32) -> String {
    match T::try_from(value) {
        Ok(v) if value != 0 => v.name().to_string(),
        _ => format!("?{value}"),
    }
}

macro_rules! named {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl Named for $ty {
            fn name(self) -> &'static str {
                match self {
                    $ty::Unspecified => "",
                    $($ty::$variant => $name,)+
                }
            }
            fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($name => Some($ty::$variant),)+
                    _ => None,
                }
            }
            fn all() -> &'static [Self] {
                &[$($ty::$variant),+]
            }
        }
    };
}

named!(InstanceState {
    Pending => "pending",
    Starting => "starting",
    Running => "running",
    Stopping => "stopping",
    Stopped => "stopped",
    Exited => "exited",
    Backoff => "backoff",
    CrashLooping => "crash-looping",
    Failed => "failed",
});
named!(RunState { Running => "running", Stopped => "stopped" });
named!(RestartKind { Always => "always", OnFailure => "on-failure", Never => "never" });
named!(OnChange { Restart => "restart", Signal => "signal", None => "none" });
named!(HealthKind { Tcp => "tcp", Http => "http", Exec => "exec" });
named!(HealthStatus {
    NoCheck => "",
    Unknown => "unknown",
    Healthy => "healthy",
    Unhealthy => "unhealthy",
});
named!(InstallState {
    Downloading => "downloading",
    Unpacking => "unpacking",
    Ready => "ready",
    Failed => "failed",
});
named!(EventKind { State => "state", Health => "health", Config => "config" });
named!(NodeState { Up => "up", Down => "down" });
named!(SecretScopeKind { All => "all", Node => "node", Ordinal => "ordinal" });
named!(RolloutState {
    Running => "running",
    RollingBack => "rolling-back",
    Succeeded => "succeeded",
    Failed => "failed",
    Interrupted => "interrupted",
});
named!(RolloutPhase {
    Pending => "pending",
    Downloading => "downloading",
    Ready => "ready",
    Draining => "draining",
    Switching => "switching",
    Starting => "starting",
    Healthy => "healthy",
    Failed => "failed",
    RolledBack => "rolled-back",
});
named!(AuditOutcome { Ok => "ok", Refused => "refused", Failed => "failed" });
named!(ServerAction {
    Start => "start",
    Stop => "stop",
    Restart => "restart",
    Undeploy => "undeploy",
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_numbers_are_errors() {
        for s in InstanceState::all() {
            assert_eq!(InstanceState::from_name(s.name()), Some(*s));
        }
        assert_eq!(
            known::<InstanceState>("InstanceStatus.state", InstanceState::CrashLooping as i32),
            Ok(InstanceState::CrashLooping)
        );
        let err = known::<RestartKind>("RestartPolicy.kind", 42).expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "RestartPolicy.kind is 42, a value this version of Corral does not know (is the other side newer?)"
        );
        let err = known::<RestartKind>("RestartPolicy.kind", 0).expect_err("not set");
        assert_eq!(err.to_string(), "RestartPolicy.kind is not set");
        assert_eq!(HealthStatus::from_name(""), Some(HealthStatus::NoCheck));
        assert_eq!(name_of::<NodeState>(7), "?7");
        let err = from_name::<OnChange>("config[0].on_change", "reboot").expect_err("no such");
        assert!(err.contains("restart, signal, none"), "{err}");
    }
}
