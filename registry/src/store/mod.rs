//! The registry's database: SQLite (one file, the default) or MySQL (shared by replicas).
//!
//! Both backends go through sqlx's `Any` driver with one set of queries; the schema lives in
//! `migrations/sqlite/` and `migrations/mysql/` and is applied when the store opens. Times
//! are Unix milliseconds in `BIGINT` columns, so both backends agree on them.

mod audit;
mod changes;
pub mod configs;
mod events;
mod filter;
mod health;
mod heartbeats;
pub mod history;
mod instances;
mod leases;
mod metrics;
mod nodes;
mod packages;
pub mod ports;
mod replicas;
mod reports;
mod rollouts;
pub mod secrets;
mod servers;
mod staging;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Connection, Executor};

pub use audit::AuditRow;
pub use changes::Change;
pub use configs::{Delivered, DeliveredTable};
pub use events::EventRow;
pub use heartbeats::HeartbeatRow;
pub use history::SpecVersion;
pub use instances::{Action, Assignment, InstanceRow, StatusReport};
pub use nodes::{JoinRecord, LoadRow, NodeRow, NodeState};
pub use packages::{CHUNK_SIZE, PackageRow};
pub use replicas::SessionPlace;
pub use rollouts::{RolloutInstanceRow, RolloutRow};
pub use servers::ServerRow;
pub use staging::{Applied, Staged, StagedInstance};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
static MYSQL_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/mysql");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "unsupported database URL {url:?}: use sqlite://PATH or mysql://USER[:PASS]@HOST[:PORT]/DB"
    )]
    UnsupportedUrl { url: String },
    #[error("cannot open database {url}: {source}")]
    Open { url: String, source: sqlx::Error },
    #[error("cannot create the directory {path} for the SQLite database: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot apply migrations to {url}: {source}")]
    Migrate {
        url: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error("cannot read the database file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the database file {path} is gone (deleted or moved away): nothing is written until it is back"
    )]
    FileGone { path: String },
    #[error(
        "the database file {path} is not the one the registry opened (it was replaced): restart the registry to use the new file"
    )]
    FileReplaced { path: String },
    #[error("the database file {path} is not writable: {source}")]
    NotWritable {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot reach the database: {source}")]
    Unreachable { source: sqlx::Error },
    #[error("the database did not answer within {within:?}")]
    NoAnswer { within: Duration },
    #[error("database error while {doing}: {source}")]
    Query {
        doing: &'static str,
        source: sqlx::Error,
    },
    #[error("node {0:?} not found")]
    NodeNotFound(String),
    #[error("node {0:?} is up; stop its agent first")]
    NodeUp(String),
    #[error("node {0:?} already exists with another identity")]
    NodeExists(String),
    #[error("server {0:?} not found")]
    ServerNotFound(String),
    #[error("instance {0:?} not found")]
    InstanceNotFound(String),
    #[error("package {0} already exists; remove it first or upload another version")]
    PackageExists(String),
    #[error("package {0} is being uploaded right now")]
    PackageBusy(String),
    #[error("package {0} not found")]
    PackageNotFound(String),
    #[error("package {name} is in use on {nodes}")]
    PackageInUse { name: String, nodes: String },
    #[error("rollout {0} not found")]
    RolloutNotFound(i64),
    #[error("{0}")]
    Conflict(String),
    #[error(
        "this registry has no secret key: start it with --secret-key-file FILE (the same file on \
         every replica) or CORRAL_SECRET_KEY"
    )]
    NoSecretKey,
    #[error(
        "{what} does not open with {key}: it is not the key the value was sealed with (a \
         replica or restart with another key file?), or the row was changed in the database"
    )]
    SecretUnreadable { what: String, key: String },
    #[error("cannot seal a secret: {0}")]
    SecretKey(crate::secrets::key::KeyError),
}

/// Turns an sqlx error into a [`StoreError::Query`] that says what was being done.
pub(crate) fn query_err(doing: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { doing, source }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    MySql,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::MySql => "mysql",
        }
    }
}

/// A handle on the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    /// Reads. On SQLite, connections that never wait for the write lock.
    pool: AnyPool,
    /// Writes: on an SQLite file a pool of one connection, so writers queue in the pool,
    /// in order, instead of each holding a connection while SQLite's busy handler sleeps
    /// and retries the lock (which left readers without a connection under a stream of
    /// writes); on MySQL and `:memory:` the same pool as reads.
    writer: AnyPool,
    backend: Backend,
    /// What the pool connects to, for a connection of the health check's own.
    connect_url: Secret,
    /// The SQLite file opened, to notice when it is deleted or replaced; None for MySQL
    /// and `:memory:`.
    file: Option<Arc<health::DbFile>>,
    /// The key secrets are sealed with; None: secrets cannot be stored or read
    /// ([`crate::secrets::startup`]).
    key: Option<Arc<crate::secrets::key::SecretKey>>,
}

/// A database URL that may hold a password: never shown.
#[derive(Clone)]
struct Secret(Arc<str>);

impl Secret {
    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

/// The URL with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// The file path of a `sqlite://PATH[?...]` or `sqlite:PATH` URL.
pub(crate) fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty()).then_some(path)
}

/// A pool of at most `max` connections to the database; on an SQLite file each checks
/// that the file is still the one opened, and can be written.
fn pool_options(max: u32, backend: Backend, file: &Option<Arc<health::DbFile>>) -> AnyPoolOptions {
    let (on_acquire, on_connect) = (file.clone(), file.clone());
    AnyPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(10))
        // A ping before each use is a round trip to the connection's thread on SQLite,
        // as long as the query itself under load; a file cannot drop a connection (the
        // pool still pings each one as it is released). A MySQL server can: kept there.
        .test_before_acquire(backend == Backend::MySql)
        // A connection to a file that is no longer at its path would write where
        // nobody reads: it is closed, and a new one opens only the file opened first.
        // So is one left inside a transaction: a COMMIT that failed on a disk error
        // (SQLite rolls back itself, so the ROLLBACK after fails too) leaves the driver
        // counting a transaction, and every BEGIN on that connection fails after; with
        // one writer connection, every write would.
        .before_acquire(move |conn, _| {
            let same = on_acquire.as_ref().is_none_or(|f| f.same().is_ok());
            let stuck = conn.is_in_transaction();
            if stuck {
                tracing::warn!("a database connection left inside a transaction is closed");
            }
            Box::pin(async move { Ok(same && !stuck) })
        })
        .after_connect(move |conn, _| {
            let file = on_connect.clone();
            Box::pin(async move {
                if let Some(file) = file {
                    // A connection opened while the file cannot be written stays
                    // read-only for good: none is opened then.
                    file.same()
                        .and_then(|()| file.writable())
                        .map_err(|e| sqlx::Error::Io(std::io::Error::other(e.to_string())))?;
                }
                if backend == Backend::Sqlite {
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                }
                Ok(())
            })
        })
}

impl Store {
    /// Opens (creating an SQLite file and its directory if needed) and migrates.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        install_default_drivers();
        let shown = redact_url(url);
        let open_err = |source| StoreError::Open {
            url: shown.clone(),
            source,
        };
        // `create_url` may create the database; `connect_url` (what the pool uses later)
        // must not: a new, empty file where the database was deleted would hide that.
        let (backend, create_url, connect_url, path) = if let Some(path) = sqlite_path(url) {
            let dir = Path::new(path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty());
            let on_disk = path != ":memory:";
            if let Some(dir) = dir.filter(|_| on_disk) {
                std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                    path: dir.display().to_string(),
                    source,
                })?;
            }
            let create = format!("sqlite://{path}?mode=rwc");
            let connect = if on_disk {
                format!("sqlite://{path}?mode=rw")
            } else {
                create.clone()
            };
            (Backend::Sqlite, create, connect, on_disk.then_some(path))
        } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            let url = url.replacen("mariadb://", "mysql://", 1);
            (Backend::MySql, url.clone(), url, None)
        } else {
            return Err(StoreError::UnsupportedUrl { url: shown });
        };
        let max = match backend {
            // On SQLite the readers' pool; writes have a pool of one of their own (below).
            Backend::Sqlite => 4,
            Backend::MySql => 16,
        };
        // One plain connection first: a pool only reports "timed out" when the server
        // refuses, while a connection names the real cause.
        let probe = sqlx::AnyConnection::connect(&create_url)
            .await
            .map_err(open_err)?;
        let _ = probe.close().await;
        let file = path.map(health::DbFile::at).transpose()?.map(Arc::new);
        if let Some(file) = &file {
            // SQLite would open it read-only without a word, and fail at the first write.
            file.writable()?;
        }
        let pool = pool_options(max, backend, &file)
            .connect(&connect_url)
            .await
            .map_err(open_err)?;
        // Every connection to `:memory:` is a database of its own: one pool there.
        let writer = if file.is_some() {
            pool_options(1, backend, &file)
                .connect(&connect_url)
                .await
                .map_err(open_err)?
        } else {
            pool.clone()
        };
        if backend == Backend::Sqlite {
            // WAL lets readers go on while a write commits; it is a property of the file.
            writer
                .execute("PRAGMA journal_mode = WAL")
                .await
                .map_err(open_err)?;
        }
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::MySql => &MYSQL_MIGRATIONS,
        };
        migrator
            .run(&writer)
            .await
            .map_err(|source| StoreError::Migrate {
                url: shown.clone(),
                source,
            })?;
        Ok(Store {
            pool,
            writer,
            backend,
            connect_url: Secret(connect_url.into()),
            file,
            key: None,
        })
    }

    /// Begins a transaction that will write. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so a transaction that reads before it writes waits for other
    /// writers instead of failing with "database is locked" when it tries to write.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.writer.begin_with("BEGIN IMMEDIATE").await,
            Backend::MySql => self.writer.begin().await,
        }
    }

    /// This store with the key secrets are sealed with.
    pub fn with_key(mut self, key: Arc<crate::secrets::key::SecretKey>) -> Store {
        self.key = Some(key);
        self
    }

    /// Whether the store can seal and open secrets.
    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Answers whether the database responds; used by `/health`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(query_err("checking the database"))?;
        Ok(())
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}

/// The clock every `*_ms` column is written with (the registry's modules take it from here).
pub use corral_common::time::now_ms;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(redact_url("mysql://u:secret@h/db"), "mysql://u:***@h/db");
        assert_eq!(redact_url("mysql://u@h/db"), "mysql://u@h/db");
        assert_eq!(redact_url("sqlite://./x.db"), "sqlite://./x.db");
    }

    /// While a transaction holds SQLite's write lock and more writers wait for it, a read
    /// still gets a connection at once: writers wait in their own pool, not on the
    /// readers' connections (with one shared pool of 4, the waiting writers took them
    /// all and the read waited for the busy timeout, 10 s).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_do_not_wait_behind_writers_on_sqlite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("r.db").display());
        let store = Store::open(&url).await.expect("open");
        let mut held = store.begin_write().await.expect("the write lock");
        sqlx::query("INSERT INTO leases (name, owner, until_ms) VALUES ('held', 'test', 0)")
            .execute(&mut *held)
            .await
            .expect("write in the transaction");
        let writers: Vec<_> = (0..6)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { store.lease(&format!("w{i}"), "w", 0, 1).await })
            })
            .collect();
        // Let every writer reach its wait before the read.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let read = tokio::time::timeout(Duration::from_secs(5), store.list_nodes()).await;
        assert!(
            matches!(read, Ok(Ok(ref nodes)) if nodes.is_empty()),
            "the read waited behind the writers: {read:?}"
        );
        held.commit().await.expect("commit");
        for w in writers {
            assert!(
                w.await.expect("join").expect("lease"),
                "each writer wrote after"
            );
        }
    }

    #[test]
    fn sqlite_paths() {
        assert_eq!(
            sqlite_path("sqlite://./.corral/dev.db"),
            Some("./.corral/dev.db")
        );
        assert_eq!(
            sqlite_path("sqlite:///var/lib/x.db?mode=rwc"),
            Some("/var/lib/x.db")
        );
        assert_eq!(sqlite_path("sqlite:x.db"), Some("x.db"));
        assert_eq!(sqlite_path("sqlite://"), None);
        assert_eq!(sqlite_path("mysql://h/db"), None);
    }
}
