//! How registry errors become gRPC statuses: in one place, with the right codes.

use tonic::{Code, Status};

use crate::store::StoreError;

impl From<StoreError> for Status {
    fn from(err: StoreError) -> Status {
        let code = match &err {
            StoreError::NodeNotFound(_)
            | StoreError::ServerNotFound(_)
            | StoreError::InstanceNotFound(_) => Code::NotFound,
            StoreError::PackageNotFound(_) | StoreError::RolloutNotFound(_) => Code::NotFound,
            StoreError::PackageExists(_) => Code::AlreadyExists,
            StoreError::NodeUp(_)
            | StoreError::NodeExists(_)
            | StoreError::PackageBusy(_)
            | StoreError::PackageInUse { .. }
            | StoreError::Conflict(_) => Code::FailedPrecondition,
            StoreError::UnsupportedUrl { .. } => Code::InvalidArgument,
            StoreError::Open { .. }
            | StoreError::CreateDir { .. }
            | StoreError::Migrate { .. }
            | StoreError::Query { .. }
            | StoreError::File { .. }
            | StoreError::FileGone { .. }
            | StoreError::FileReplaced { .. }
            | StoreError::NotWritable { .. }
            | StoreError::Unreachable { .. }
            | StoreError::NoAnswer { .. } => Code::Unavailable,
        };
        Status::new(code, err.to_string())
    }
}
