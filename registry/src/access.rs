//! What each Admin call needs, in one place.
//!
//! A call is **mutating** unless it is listed here as a read: a new RPC is refused to
//! viewers and audited until someone decides otherwise (default deny). Reads of secrets
//! (their names, scopes and versions; values are never served) are for admins only.
//!
//! To add a read-only RPC, add its method name to [`READ_ONLY`]; to add one viewers may
//! not make although it changes nothing, to [`ADMIN_READS`].

use std::collections::HashSet;
use std::sync::OnceLock;

use tonic::Status;

use crate::auth::{Caller, Role};

/// Admin calls that change nothing and that viewers may make.
pub const READ_ONLY: &[&str] = &[
    "ListNodes",
    "GetNode",
    "ListServers",
    "ServerStatus",
    "ListEvents",
    "FollowEvents",
    "ListPackages",
    "WatchRollout",
    "GetRollout",
    "ListRollouts",
    "ExportServer",
    "ListAudit",
    "Logs",
    "ServerHistory",
    "ServerDiff",
];

/// Admin calls that change nothing but that only admins may make: they are about secrets.
pub const ADMIN_READS: &[&str] = &["ListSecrets"];

/// What a call needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Any valid token.
    Read,
    /// An admin token; not audited, since it changes nothing.
    AdminRead,
    /// An admin token; audited.
    Mutate,
}

impl Access {
    pub fn of(method: &str) -> Access {
        if READ_ONLY.contains(&method) {
            Access::Read
        } else if ADMIN_READS.contains(&method) {
            Access::AdminRead
        } else {
            Access::Mutate
        }
    }
}

/// The dashboard's login, recorded (and counted) as a call when its token is refused.
pub const LOGIN: &str = "Login";

/// Whether `caller` may change the fleet at all (the dashboard shows action buttons).
pub fn may_change(caller: &Caller) -> bool {
    may(caller, "ControlServer").is_ok()
}

/// Whether `caller` may make the Admin call `method` (a method name, e.g. "Apply");
/// PermissionDenied naming the role and the call when not.
pub fn may(caller: &Caller, method: &str) -> Result<(), Status> {
    match (caller.role, Access::of(method)) {
        (Role::Admin, _) | (Role::Viewer, Access::Read) => Ok(()),
        (Role::Viewer, access) => Err(Status::permission_denied(format!(
            "token {} has the role viewer, which may not call {method}: {}",
            corral_proto::text::quoted(&caller.name),
            if access == Access::AdminRead {
                "it reads secrets, which needs an admin token"
            } else {
                "it changes the fleet, which needs an admin token"
            }
        ))),
    }
}

/// The gRPC path of the Admin service's calls: `/corral.v1.Admin/METHOD`.
pub const ADMIN_PREFIX: &str = "/corral.v1.Admin/";

/// The method name of an Admin call's path ("Apply"), as long as it is sane to log; an
/// empty string otherwise.
pub fn method_of(path: &str) -> &str {
    let m = path.strip_prefix(ADMIN_PREFIX).unwrap_or_default();
    if m.len() <= 64 && m.chars().all(|c| c.is_ascii_alphanumeric()) {
        m
    } else {
        ""
    }
}

/// Whether `method` is one of the Admin service's (from the compiled descriptors), so
/// that a metric label cannot grow without bound with made-up paths.
pub fn known(method: &str) -> bool {
    if method == LOGIN {
        return true;
    }
    static METHODS: OnceLock<HashSet<String>> = OnceLock::new();
    METHODS
        .get_or_init(|| descriptor::admin_methods(corral_proto::FILE_DESCRIPTOR_SET))
        .contains(method)
}

/// Just enough of `google.protobuf.FileDescriptorSet` to list a service's methods.
mod descriptor {
    use std::collections::HashSet;

    use prost::Message;

    #[derive(Clone, PartialEq, Message)]
    struct FileSet {
        #[prost(message, repeated, tag = "1")]
        file: Vec<File>,
    }

    #[derive(Clone, PartialEq, Message)]
    struct File {
        #[prost(string, tag = "2")]
        package: String,
        #[prost(message, repeated, tag = "6")]
        service: Vec<Service>,
    }

    #[derive(Clone, PartialEq, Message)]
    struct Service {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(message, repeated, tag = "2")]
        method: Vec<Method>,
    }

    #[derive(Clone, PartialEq, Message)]
    struct Method {
        #[prost(string, tag = "1")]
        name: String,
    }

    /// The methods of `corral.v1.Admin`; empty if the set does not decode (a broken build).
    pub fn admin_methods(set: &[u8]) -> HashSet<String> {
        FileSet::decode(set)
            .map(|s| {
                s.file
                    .into_iter()
                    .filter(|f| f.package == "corral.v1")
                    .flat_map(|f| f.service)
                    .filter(|s| s.name == "Admin")
                    .flat_map(|s| s.method)
                    .map(|m| m.name)
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_deny() {
        let viewer = Caller {
            name: "v".into(),
            role: Role::Viewer,
        };
        let admin = Caller {
            name: "a".into(),
            role: Role::Admin,
        };
        for m in [
            "Apply",
            "ControlServer",
            "RemoveNode",
            "PutSecret",
            "NotYetWritten",
        ] {
            assert_eq!(Access::of(m), Access::Mutate, "{m}");
            let err = may(&viewer, m).expect_err(m);
            assert_eq!(err.code(), tonic::Code::PermissionDenied);
            assert!(err.message().contains("viewer") && err.message().contains(m));
            assert!(may(&admin, m).is_ok());
        }
        assert!(may(&viewer, "ListSecrets").is_err());
        assert!(may(&viewer, "ListNodes").is_ok() && may(&viewer, "ListAudit").is_ok());
    }

    #[test]
    fn methods_come_from_the_descriptors() {
        assert!(known("Apply") && known("ListNodes") && known("ListAudit"));
        assert!(!known("Nope") && !known(""));
        assert_eq!(method_of("/corral.v1.Admin/Apply"), "Apply");
        assert_eq!(method_of("/corral.v1.Admin/a/b"), "");
        assert_eq!(method_of("/other/Apply"), "");
    }
}
