//! `registry secret put|list|rm`: per-instance secret values. Values go in from a file
//! (or stdin) and never come back: `list` shows names, scopes, versions and sizes.

use std::io::Read;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use corral_proto::v1::{
    ListSecretsRequest, PutSecretRequest, RemoveSecretRequest, SecretInfo, SecretScope,
    SecretScopeKind,
};
use corral_proto::wire::name_of;
use serde_json::{Value, json};

use super::output::{print_table, time_ms};
use super::{CliError, ClientArgs, Format, connect};

#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// Store a value for some instances of a server (a new version each time).
    Put {
        /// APP.SERVER
        server: String,
        /// The secret's name, as `[[files]] secret` and `secret('NAME')` use it.
        name: String,
        #[command(flatten)]
        scope: ScopeArgs,
        /// The file holding the value ("-": standard input).
        #[arg(long)]
        file: PathBuf,
    },
    /// List secrets: names, scopes and versions, never values.
    List {
        /// APP.SERVER; every server's when left out.
        server: Option<String>,
    },
    /// Remove the value of one scope (refused while the spec needs it).
    Rm {
        /// APP.SERVER
        server: String,
        name: String,
        #[command(flatten)]
        scope: ScopeArgs,
    },
}

/// Which instances a value is for: exactly one of the three.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct ScopeArgs {
    /// The instance on this node.
    #[arg(long)]
    node: Option<String>,
    /// The instance with this ordinal.
    #[arg(long)]
    ordinal: Option<u32>,
    /// Every instance of the server (a node's or an ordinal's value wins over it).
    #[arg(long)]
    all: bool,
}

impl ScopeArgs {
    fn to_proto(&self) -> SecretScope {
        match (&self.node, self.ordinal) {
            (Some(node), _) => SecretScope {
                kind: SecretScopeKind::Node.into(),
                node: node.clone(),
                ordinal: 0,
            },
            (None, Some(ordinal)) => SecretScope {
                kind: SecretScopeKind::Ordinal.into(),
                node: String::new(),
                ordinal,
            },
            (None, None) => SecretScope {
                kind: SecretScopeKind::All.into(),
                ..SecretScope::default()
            },
        }
    }
}

/// `all`, `node node-a`, `ordinal 2`
fn scope_text(s: Option<&SecretScope>) -> String {
    let Some(s) = s else {
        return String::new();
    };
    let kind = name_of::<SecretScopeKind>(s.kind);
    match SecretScopeKind::try_from(s.kind) {
        Ok(SecretScopeKind::Node) => format!("{kind} {}", s.node),
        Ok(SecretScopeKind::Ordinal) => format!("{kind} {}", s.ordinal),
        _ => kind,
    }
}

pub fn secret_json(s: &SecretInfo) -> Value {
    let scope = s.scope.clone().unwrap_or_default();
    json!({
        "server": s.server,
        "name": s.name,
        "scope": name_of::<SecretScopeKind>(scope.kind),
        "node": scope.node,
        "ordinal": scope.ordinal,
        "version": s.version,
        "size": s.size,
        "updated_at": time_ms(s.updated_at_ms),
        "updated_at_ms": s.updated_at_ms,
    })
}

fn print(list: &[SecretInfo], args: &ClientArgs) {
    if args.output == Format::Json {
        println!("{}", Value::Array(list.iter().map(secret_json).collect()));
        return;
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            vec![
                s.server.clone(),
                s.name.clone(),
                scope_text(s.scope.as_ref()),
                s.version.to_string(),
                s.size.to_string(),
                time_ms(s.updated_at_ms),
            ]
        })
        .collect();
    print_table(
        &["SERVER", "NAME", "FOR", "VERSION", "BYTES", "UPDATED"],
        &rows,
    );
}

fn read_value(file: &PathBuf) -> Result<Vec<u8>, CliError> {
    let err = |source| CliError::File {
        path: file.clone(),
        source,
    };
    if file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).map_err(err)?;
        return Ok(buf);
    }
    std::fs::read(file).map_err(err)
}

pub async fn run(cmd: SecretCommand, args: &ClientArgs) -> Result<(), CliError> {
    match cmd {
        SecretCommand::Put {
            server,
            name,
            scope,
            file,
        } => {
            let value = read_value(&file)?;
            let mut client = connect(args).await?;
            let info = client
                .put_secret(PutSecretRequest {
                    server,
                    name,
                    scope: Some(scope.to_proto()),
                    value,
                })
                .await?
                .into_inner();
            if args.output == Format::Json {
                println!("{}", secret_json(&info));
            } else {
                println!(
                    "secret {} of {} ({}): version {}",
                    info.name,
                    info.server,
                    scope_text(info.scope.as_ref()),
                    info.version
                );
            }
        }
        SecretCommand::List { server } => {
            let mut client = connect(args).await?;
            let list = client
                .list_secrets(ListSecretsRequest {
                    server: server.unwrap_or_default(),
                })
                .await?
                .into_inner()
                .secrets;
            print(&list, args);
        }
        SecretCommand::Rm {
            server,
            name,
            scope,
        } => {
            let mut client = connect(args).await?;
            let info = client
                .remove_secret(RemoveSecretRequest {
                    server,
                    name,
                    scope: Some(scope.to_proto()),
                })
                .await?
                .into_inner();
            if args.output == Format::Json {
                println!("{}", secret_json(&info));
            } else {
                println!(
                    "removed secret {} of {} ({}), version {}",
                    info.name,
                    info.server,
                    scope_text(info.scope.as_ref()),
                    info.version
                );
            }
        }
    }
    Ok(())
}
