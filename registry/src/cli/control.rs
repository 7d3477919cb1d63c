//! `registry server start|stop|restart|undeploy`, and with `--wait` (not for undeploy)
//! the wait for the result: polls `ServerStatus` until every
//! targeted instance is where the command asked (running, and healthy when the server has
//! a health check; or stopped), printing each change on the way; fails naming the instance
//! and its cause when one cannot get there (crash loop, a start that failed, a failed
//! health check) or the timeout passes.
//!
//! Without a health check, "running" means the same process seen running for
//! [`STEADY`]: a command that exits at once is running only for a moment.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clap::Args;
use corral_proto::v1::{HealthStatus, InstanceInfo, InstanceState, RunState, ServerStatusRequest};
use corral_proto::wire::name_of;

use corral_proto::v1::{ControlServerRequest, ServerAction};
use corral_proto::wire::Named;
use serde_json::json;

use super::server::{Target, state_cell};
use super::{CliError, Client, ClientArgs, Format};

/// How long a process without a health check must be seen running.
pub const STEADY: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(250);

/// `start`, `stop` and `restart`: the instances, and whether to wait for them.
#[derive(Args, Debug)]
pub struct Control {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Args, Debug, Default)]
pub struct WaitArgs {
    /// Wait until every instance is running (and healthy, with a health check) or
    /// stopped; exit non-zero naming the instance and why when one does not get there.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits [default: 60s].
    #[arg(long, value_parser = humantime::parse_duration, requires = "wait")]
    pub timeout: Option<Duration>,
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// What an instance was before the command: its process and its last report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Before {
    pub pid: u32,
    pub started_at_ms: i64,
    pub reported_at_ms: i64,
}

impl Before {
    pub fn of(i: &InstanceInfo) -> Before {
        Before {
            pid: i.pid,
            started_at_ms: i.started_at_ms,
            reported_at_ms: i.reported_at_ms,
        }
    }
}

/// What the command asked of the instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Goal {
    Running,
    /// Running with a process other than the one before.
    Restarted,
    Stopped,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Done,
    Waiting(String),
    Failed(String),
}

/// The last exit and error of an instance, for a message: "; last exit: code 3".
fn cause(i: &InstanceInfo) -> String {
    let mut out = String::new();
    if !i.last_exit.is_empty() {
        out.push_str(&format!("; last exit: {}", i.last_exit));
    }
    if !i.last_error.is_empty() {
        out.push_str(&format!("; {}", i.last_error));
    }
    out
}

/// Where an instance stands against the goal. `steady_for` is how long its current
/// process has been seen running; failures count only from a report made after the
/// command (an instance crash-looping before a restart is not yet a failed restart).
pub fn judge(i: &InstanceInfo, goal: Goal, before: Before, steady_for: Duration) -> Verdict {
    let state = InstanceState::try_from(i.state).unwrap_or(InstanceState::Unspecified);
    let waiting = || Verdict::Waiting(format!("{}{}", state_cell(i), cause(i)));
    if goal == Goal::Stopped {
        return if state == InstanceState::Stopped {
            Verdict::Done
        } else {
            waiting()
        };
    }
    if i.desired != i32::from(RunState::Running) {
        return Verdict::Failed(format!(
            "its desired state is now {} (changed by another command)",
            name_of::<RunState>(i.desired)
        ));
    }
    let fresh = i.reported_at_ms != before.reported_at_ms;
    let same_process =
        before.pid != 0 && i.pid == before.pid && i.started_at_ms == before.started_at_ms;
    match state {
        InstanceState::CrashLooping if fresh => {
            Verdict::Failed(format!("it is crash-looping{}", cause(i)))
        }
        InstanceState::Failed if fresh => {
            Verdict::Failed(format!("it could not be started{}", cause(i)))
        }
        InstanceState::Exited if fresh => Verdict::Failed(format!(
            "it exited and its restart policy leaves it{}",
            cause(i)
        )),
        InstanceState::Running if goal == Goal::Restarted && same_process => {
            Verdict::Waiting("running, not restarted yet".into())
        }
        InstanceState::Running => match HealthStatus::try_from(i.health) {
            Ok(HealthStatus::Healthy) => Verdict::Done,
            Ok(HealthStatus::Unhealthy) if fresh => {
                Verdict::Failed(format!("it failed its health check: {}", i.health_error))
            }
            Ok(HealthStatus::Unknown | HealthStatus::Unhealthy) => {
                Verdict::Waiting("running, health check not passed yet".into())
            }
            _ if steady_for >= STEADY => Verdict::Done,
            _ => Verdict::Waiting("running".into()),
        },
        _ => waiting(),
    }
}

/// Sends the action; with --wait, then waits for its result.
pub async fn control(
    client: &mut Client,
    action: ServerAction,
    target: Target,
    wait_args: WaitArgs,
    args: &ClientArgs,
) -> Result<(), CliError> {
    let server = target.server.clone();
    let mut before = HashMap::new();
    if wait_args.wait {
        let status = client
            .server_status(ServerStatusRequest {
                server: server.clone(),
            })
            .await?
            .into_inner();
        for i in &status.instances {
            before.insert(i.node.clone(), Before::of(i));
        }
    }
    let resp = client
        .control_server(ControlServerRequest {
            server: server.clone(),
            action: action.into(),
            node: target.node.unwrap_or_default(),
        })
        .await?
        .into_inner();
    let json = args.output == Format::Json;
    if !json {
        println!("{} {} on {}", action.name(), server, resp.nodes.join(", "));
    }
    let goal = match action {
        ServerAction::Stop => Goal::Stopped,
        ServerAction::Restart => Goal::Restarted,
        _ => Goal::Running,
    };
    let timeout = wait_args.timeout.unwrap_or(DEFAULT_TIMEOUT);
    if wait_args.wait {
        wait(client, &server, &resp.nodes, goal, &before, timeout, !json).await?;
        if !json {
            println!("{server}: {} on {}", goal_name(goal), resp.nodes.join(", "));
        }
    }
    if json {
        println!(
            "{}",
            json!({"server": server, "action": action.name(), "nodes": resp.nodes,
                   "waited": wait_args.wait})
        );
    }
    Ok(())
}

/// Polls until every instance of `server` on `nodes` meets `goal`.
pub async fn wait(
    client: &mut Client,
    server: &str,
    nodes: &[String],
    goal: Goal,
    before: &HashMap<String, Before>,
    timeout: Duration,
    progress: bool,
) -> Result<(), CliError> {
    let start = Instant::now();
    // node -> (pid, started_at_ms, first seen running)
    let mut running: HashMap<&str, (u32, i64, Instant)> = HashMap::new();
    let mut shown: HashMap<&str, String> = HashMap::new();
    loop {
        let status = client
            .server_status(ServerStatusRequest {
                server: server.to_string(),
            })
            .await?
            .into_inner();
        let now = Instant::now();
        let mut pending = Vec::new();
        for node in nodes {
            let Some(i) = status.instances.iter().find(|i| &i.node == node) else {
                return Err(CliError::Failed(format!(
                    "{server}@{node}: the instance is gone (undeployed by another command?)"
                )));
            };
            let steady_for = if i.state == i32::from(InstanceState::Running) {
                let seen = running.entry(node).or_insert((i.pid, i.started_at_ms, now));
                if (seen.0, seen.1) != (i.pid, i.started_at_ms) {
                    *seen = (i.pid, i.started_at_ms, now);
                }
                now - seen.2
            } else {
                running.remove(node.as_str());
                Duration::ZERO
            };
            let verdict = judge(
                i,
                goal,
                before.get(node).copied().unwrap_or_default(),
                steady_for,
            );
            let line = match &verdict {
                Verdict::Done => "done".to_string(),
                Verdict::Waiting(why) | Verdict::Failed(why) => why.clone(),
            };
            if progress && shown.get(node.as_str()) != Some(&line) {
                println!("  {server}@{node}: {line}");
                shown.insert(node, line);
            }
            match verdict {
                Verdict::Done => {}
                Verdict::Waiting(why) => pending.push(format!("{server}@{node}: {why}")),
                Verdict::Failed(why) => {
                    return Err(CliError::Failed(format!(
                        "{server}@{node} did not reach {}: {why}",
                        goal_name(goal)
                    )));
                }
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(CliError::Failed(format!(
                "timed out after {} waiting for {} to be {}: {}",
                humantime::format_duration(timeout),
                if pending.len() == 1 {
                    "an instance".to_string()
                } else {
                    format!("{} instances", pending.len())
                },
                goal_name(goal),
                pending.join("; ")
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn goal_name(goal: Goal) -> &'static str {
    match goal {
        Goal::Running => "running",
        Goal::Restarted => "running again",
        Goal::Stopped => "stopped",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(state: InstanceState, health: HealthStatus, pid: u32, reported: i64) -> InstanceInfo {
        InstanceInfo {
            node: "node-a".into(),
            server: "demo.x".into(),
            desired: RunState::Running.into(),
            state: state.into(),
            health: health.into(),
            pid,
            started_at_ms: i64::from(pid),
            reported_at_ms: reported,
            node_state: corral_proto::v1::NodeState::Up.into(),
            last_exit: "code 3".into(),
            ..Default::default()
        }
    }

    #[test]
    fn verdicts() {
        use HealthStatus::*;
        use InstanceState::*;
        let old = Before {
            pid: 7,
            started_at_ms: 7,
            reported_at_ms: 1,
        };
        let long = STEADY;
        let short = Duration::ZERO;
        let fails = |v: Verdict| matches!(v, Verdict::Failed(_));
        let waits = |v: Verdict| matches!(v, Verdict::Waiting(_));
        // Running: steady without a check, healthy with one.
        assert_eq!(
            judge(&inst(Running, NoCheck, 8, 2), Goal::Running, old, long),
            Verdict::Done
        );
        assert!(waits(judge(
            &inst(Running, NoCheck, 8, 2),
            Goal::Running,
            old,
            short
        )));
        assert_eq!(
            judge(&inst(Running, Healthy, 8, 2), Goal::Running, old, short),
            Verdict::Done
        );
        assert!(waits(judge(
            &inst(Running, Unknown, 8, 2),
            Goal::Running,
            old,
            long
        )));
        assert!(fails(judge(
            &inst(Running, Unhealthy, 8, 2),
            Goal::Running,
            old,
            long
        )));
        // A restart waits for another process.
        assert!(waits(judge(
            &inst(Running, Healthy, 7, 1),
            Goal::Restarted,
            old,
            long
        )));
        assert_eq!(
            judge(&inst(Running, Healthy, 8, 2), Goal::Restarted, old, long),
            Verdict::Done
        );
        // Failures count from a report after the command.
        assert!(waits(judge(
            &inst(CrashLooping, NoCheck, 0, 1),
            Goal::Restarted,
            old,
            short
        )));
        let v = judge(
            &inst(CrashLooping, NoCheck, 0, 2),
            Goal::Restarted,
            old,
            short,
        );
        assert_eq!(
            v,
            Verdict::Failed("it is crash-looping; last exit: code 3".into())
        );
        assert!(fails(judge(
            &inst(Exited, NoCheck, 0, 2),
            Goal::Running,
            old,
            short
        )));
        assert!(fails(judge(
            &inst(Failed, NoCheck, 0, 2),
            Goal::Running,
            old,
            short
        )));
        assert!(waits(judge(
            &inst(Backoff, NoCheck, 0, 2),
            Goal::Running,
            old,
            short
        )));
        // Stopping.
        assert_eq!(
            judge(&inst(Stopped, NoCheck, 0, 2), Goal::Stopped, old, short),
            Verdict::Done
        );
        assert!(waits(judge(
            &inst(Stopping, NoCheck, 7, 2),
            Goal::Stopped,
            old,
            short
        )));
    }
}
