//! Test databases: a fresh SQLite file, or a fresh MySQL database that is dropped after.
//!
//! The MySQL server is `CORRAL_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306`).
//! `scripts/test.sh` sets `CORRAL_TEST_MYSQL_SKIP=1` when no server answers outside CI;
//! then MySQL tests print that they were skipped. Anywhere else, an unreachable server
//! fails the test.

use std::path::Path;

use rand::Rng;
use sqlx::{Connection, Executor, MySqlConnection};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    MySql,
}

pub struct TestDb {
    pub url: String,
    mysql: Option<(String, String)>,
}

pub fn mysql_server() -> String {
    std::env::var("CORRAL_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

impl TestDb {
    /// A new, empty database; `None` when the MySQL half is skipped.
    pub fn new(backend: Backend, dir: &Path) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => Some(TestDb {
                url: format!("sqlite://{}", dir.join("registry.db").display()),
                mysql: None,
            }),
            Backend::MySql => {
                if std::env::var("CORRAL_TEST_MYSQL_SKIP").is_ok_and(|v| v == "1") {
                    eprintln!("SKIPPED: MySQL half (no MySQL server; CORRAL_TEST_MYSQL_SKIP=1)");
                    return None;
                }
                let server = mysql_server();
                let name = format!("corral_t_{:016x}", rand::rng().random::<u64>());
                // Run on a thread of its own: callers may be inside a runtime already.
                let (s, n) = (server.clone(), name.clone());
                std::thread::spawn(move || {
                    block_on(async {
                        let mut conn = MySqlConnection::connect(&s)
                            .await
                            .map_err(|e| e.to_string())?;
                        conn.execute(format!("CREATE DATABASE `{n}`").as_str())
                            .await
                            .map_err(|e| e.to_string())?;
                        Ok::<_, String>(())
                    })
                })
                .join()
                .expect("create-database thread")
                .unwrap_or_else(|e| panic!("MySQL server {server} is needed for this test: {e}"));
                Some(TestDb {
                    url: format!("{}/{name}", server.trim_end_matches('/')),
                    mysql: Some((server, name)),
                })
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((server, name)) = self.mysql.take() {
            let _ = std::thread::spawn(move || {
                block_on(async {
                    if let Ok(mut conn) = MySqlConnection::connect(&server).await {
                        let _ = conn
                            .execute(format!("DROP DATABASE IF EXISTS `{name}`").as_str())
                            .await;
                    }
                })
            })
            .join();
        }
    }
}
