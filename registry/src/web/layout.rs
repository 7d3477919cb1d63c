//! The page shell (navigation, scripts, the CSRF header every htmx request sends) and the
//! small formatting helpers every page uses.

use corral_proto::v1::{HealthStatus, InstanceState, NodeState, RolloutPhase, RolloutState};
use corral_proto::wire::name_of;
use maud::{DOCTYPE, Markup, html};

use super::Access;

/// The assets' names carry their version, so browsers cache them for good.
pub const HTMX_NAME: &str = "htmx-2.0.11.min.js";
pub const HTMX_SSE_NAME: &str = "htmx-ext-sse-2.2.4.min.js";
pub const CSS_NAME: &str = "dashboard-3.css";

/// htmx swaps error answers too (they carry the message naming what is wrong).
const HTMX_CONFIG: &str = r#"{"responseHandling":[{"code":"204","swap":false},{"code":".*","swap":true}],"defaultSwapStyle":"innerHTML"}"#;

/// Which navigation entry a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Nodes,
    Servers,
    Events,
    Rollouts,
    Packages,
    Audit,
}

const NAV: [(Nav, &str, &str); 6] = [
    (Nav::Nodes, "/", "Nodes"),
    (Nav::Servers, "/servers", "Servers"),
    (Nav::Events, "/events", "Events"),
    (Nav::Rollouts, "/rollouts", "Rollouts"),
    (Nav::Packages, "/packages", "Packages"),
    (Nav::Audit, "/audit", "Audit"),
];

fn head(title: &str) -> Markup {
    html! {
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        meta name="htmx-config" content=(HTMX_CONFIG);
        title { (title) " · Corral" }
        link rel="stylesheet" href={ "/assets/" (CSS_NAME) };
        script src={ "/assets/" (HTMX_NAME) } {}
        script src={ "/assets/" (HTMX_SSE_NAME) } {}
    }
}

/// A page: navigation and content. `live` is the server-sent events source that keeps it
/// current (see [`super::live`]).
pub fn page(title: &str, nav: Nav, access: &Access, live: &str, content: Markup) -> Markup {
    let headers = format!(r#"{{"x-csrf-token":"{}"}}"#, access.csrf);
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (head(title)) }
            body hx-headers=(headers) {
                header.top {
                    a.brand href="/" { "Corral" }
                    nav {
                        @for (n, href, label) in NAV {
                            a.on[n == nav] href=(href) { (label) }
                        }
                    }
                    div.right {
                        span title="live updates" { span.live-dot {} " live" }
                        @if !access.can_act { span.badge { "view only" } }
                        @if access.logged_in {
                            button.small hx-post="/logout" { "Log out" }
                        }
                    }
                }
                main hx-ext="sse" sse-connect=(live) { (content) }
            }
        }
    }
}

/// A page without navigation (login).
pub fn bare(title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (head(title)) }
            body { main { (content) } }
        }
    }
}

/// The part of a page that is fetched again (and swapped in place) when the fleet
/// changes: `url` is the page's own address.
pub fn live_region(url: &str, content: Markup) -> Markup {
    html! {
        // hx-disinherit: buttons inside post elsewhere and swap their own way.
        div #live hx-get=(url) hx-trigger="sse:fleet" hx-select="#live" hx-swap="outerHTML"
            hx-disinherit="*" {
            (content)
        }
    }
}

pub fn badge(class: &str, text: &str) -> Markup {
    html! { span class={ "badge " (class) } { (text) } }
}

pub fn instance_state(state: i32) -> Markup {
    let class = match InstanceState::try_from(state) {
        Ok(InstanceState::Running) => "ok",
        Ok(InstanceState::Starting | InstanceState::Stopping | InstanceState::Backoff) => "warn",
        Ok(InstanceState::CrashLooping | InstanceState::Failed | InstanceState::Exited) => "bad",
        _ => "",
    };
    badge(class, &name_of::<InstanceState>(state))
}

pub fn health(health: i32) -> Markup {
    let class = match HealthStatus::try_from(health) {
        Ok(HealthStatus::Healthy) => "ok",
        Ok(HealthStatus::Unhealthy) => "bad",
        Ok(HealthStatus::Unknown) => "warn",
        _ => "",
    };
    match HealthStatus::try_from(health) {
        Ok(HealthStatus::NoCheck) => html! { span.muted title="no health check" { "—" } },
        _ => badge(class, &name_of::<HealthStatus>(health)),
    }
}

pub fn node_state(state: i32) -> Markup {
    let class = match NodeState::try_from(state) {
        Ok(NodeState::Up) => "ok",
        Ok(NodeState::Down) => "bad",
        _ => "",
    };
    let text = if state == 0 {
        "unknown".to_string()
    } else {
        name_of::<NodeState>(state)
    };
    badge(class, &text)
}

pub fn rollout_state(state: i32) -> Markup {
    let class = match RolloutState::try_from(state) {
        Ok(RolloutState::Succeeded) => "ok",
        Ok(RolloutState::Running | RolloutState::RollingBack) => "warn",
        Ok(RolloutState::Failed | RolloutState::Interrupted) => "bad",
        _ => "",
    };
    badge(class, &name_of::<RolloutState>(state))
}

pub fn phase(phase: i32) -> Markup {
    let class = match RolloutPhase::try_from(phase) {
        Ok(RolloutPhase::Healthy) => "ok",
        Ok(RolloutPhase::Failed | RolloutPhase::RolledBack) => "bad",
        Ok(RolloutPhase::Pending) => "",
        _ => "warn",
    };
    badge(class, &name_of::<RolloutPhase>(phase))
}

/// A progress bar, 0–100.
pub fn bar(percent: u32, class: &str) -> Markup {
    html! {
        span class={ "bar " (class) } { i style={ "width:" (percent.min(100)) "%" } {} }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// "4s ago", "3m ago", "2h ago", "5d ago"; "—" for never (0).
pub fn ago(ms: i64) -> String {
    if ms <= 0 {
        return "—".into();
    }
    let s = (now_ms() - ms).max(0) / 1000;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

/// A timestamp as UTC `YYYY-MM-DD HH:MM:SS`, shown where the exact time matters.
pub fn at(ms: i64) -> String {
    if ms <= 0 {
        return "—".into();
    }
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let (y, m, d) = civil(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

pub fn bytes(n: u64) -> String {
    bytesize::ByteSize(n).display().si().to_string()
}

/// A flash message after an action.
pub fn flash(class: &str, text: &str) -> Markup {
    html! { div class={ "flash " (class) } role="status" { (text) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(at(0), "—");
        assert_eq!(at(1), "1970-01-01 00:00:00");
        assert_eq!(at(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(at(1_764_590_400_000 + 3_723_000), "2025-12-01 13:02:03");
        assert_eq!(ago(0), "—");
        assert!(ago(now_ms() - 3_000).ends_with("s ago"));
        assert_eq!(ago(now_ms() - 7_200_000), "2h ago");
    }
}
