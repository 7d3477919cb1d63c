use super::*;

fn running() -> StatusReport {
    StatusReport {
        app: "demo".into(),
        server: "web".into(),
        state: "running".into(),
        pid: 42,
        version: "1.0.0".into(),
        health: "healthy".into(),
        ..StatusReport::default()
    }
}

fn event(n: i64) -> EventRow {
    EventRow {
        id: 0,
        at_ms: n,
        app: "demo".into(),
        server: "web".into(),
        node: "node-a".into(),
        from: "running".into(),
        to: "exited".into(),
        reason: format!("event {n}"),
        kind: "state".into(),
    }
}

#[test]
fn what_a_report_changes() {
    let known = running();
    let progress = StatusReport {
        install_version: "2.0.0".into(),
        install_state: "downloading".into(),
        install_percent: 35,
        ..running()
    };
    let crashed = StatusReport {
        state: "backoff".into(),
        pid: 0,
        ..running()
    };
    let unhealthy = StatusReport {
        health: "unhealthy".into(),
        ..running()
    };
    let restarted = StatusReport {
        pid: 43,
        restarts: 1,
        ..running()
    };
    let table = [
        (None, &known, Change::Discovery),
        (Some(&known), &known, Change::Nothing),
        (Some(&known), &progress, Change::Row),
        (Some(&known), &restarted, Change::Row),
        (Some(&known), &crashed, Change::Discovery),
        (Some(&known), &unhealthy, Change::Discovery),
    ];
    for (before, now, want) in table {
        assert_eq!(classify(before, now), want, "{before:?} -> {now:?}");
    }
}

#[test]
fn only_what_changed_waits_to_be_written() {
    let actual = Actual::default();
    actual.seed("node-a", 1, vec![("demo".into(), "web".into(), running())]);
    assert_eq!(actual.report("node-a", 1, running(), 10), Change::Nothing);
    assert_eq!(actual.counts(), (0, 0, 0));

    // Progress of an install: a row to write, no discovery change.
    for percent in [5, 10, 15] {
        let progress = StatusReport {
            install_percent: percent,
            ..running()
        };
        assert_eq!(actual.report("node-a", 1, progress, 20), Change::Row);
    }
    let pending = actual.take();
    assert_eq!(pending.statuses.len(), 1, "only the latest report waits");
    let (_, latest) = pending.statuses.iter().next().expect("one");
    assert_eq!(latest.report.install_percent, 15);
    assert!(!latest.discovery);

    // Once the desired state is sent again, nothing is known: the next report is written
    // and counts as a discovery change.
    actual.forget("node-a");
    assert_eq!(actual.report("node-a", 1, running(), 30), Change::Discovery);
}

#[test]
fn a_discovery_change_survives_a_newer_report_and_a_failed_write() {
    let actual = Actual::default();
    actual.seed("node-a", 1, vec![("demo".into(), "web".into(), running())]);
    let stopped = StatusReport {
        state: "stopped".into(),
        ..running()
    };
    assert_eq!(
        actual.report("node-a", 1, stopped.clone(), 10),
        Change::Discovery
    );
    let progress = StatusReport {
        install_percent: 50,
        ..stopped.clone()
    };
    assert_eq!(actual.report("node-a", 1, progress, 20), Change::Row);
    let failed = actual.take();
    assert!(failed.statuses.values().all(|p| p.discovery));

    // The write failed, and a newer report came meanwhile: the newer one is written, and
    // it still carries the discovery change.
    let newer = StatusReport {
        install_percent: 60,
        ..stopped
    };
    assert_eq!(actual.report("node-a", 1, newer, 30), Change::Row);
    assert_eq!(actual.put_back(failed), 0);
    let pending = actual.take();
    let (_, p) = pending.statuses.iter().next().expect("one");
    assert_eq!((p.report.install_percent, p.discovery), (60, true));
}

#[test]
fn a_new_session_supersedes_reports_of_the_old_one() {
    let actual = Actual::default();
    actual.seed("node-a", 1, Vec::new());
    actual.report("node-a", 1, running(), 10);
    actual.seed("node-a", 2, vec![("demo".into(), "web".into(), running())]);
    assert_eq!(
        actual.counts().0,
        0,
        "the new session sends every status again"
    );
    assert_eq!(actual.report("node-a", 2, running(), 20), Change::Nothing);
}

#[test]
fn events_wait_in_order_up_to_a_bound() {
    let actual = Actual::default();
    for n in 0..3 {
        assert_eq!(actual.event(event(n)), 0);
    }
    let failed = actual.take();
    actual.event(event(3));
    assert_eq!(actual.put_back(failed), 0);
    let order: Vec<i64> = actual.take().events.iter().map(|e| e.at_ms).collect();
    assert_eq!(order, [0, 1, 2, 3], "what failed goes first");
    assert_eq!(
        actual.counts(),
        (0, 4, 0),
        "taken ones count until the round ends"
    );
    actual.put_back(Pending::default());
    assert_eq!(actual.counts(), (0, 0, 0));

    let mut dropped = 0;
    for n in 0..MAX_PENDING_EVENTS as i64 + 5 {
        dropped += actual.event(event(n));
    }
    assert_eq!(dropped, 5);
    let (_, waiting, counted) = actual.counts();
    assert_eq!((waiting, counted), (MAX_PENDING_EVENTS, 5));
    let first = actual.take().events.front().map(|e| e.at_ms);
    assert_eq!(first, Some(5), "the oldest went first");
    assert_eq!(actual.take_dropped(), 5);
    assert_eq!(actual.take_dropped(), 0);
}

#[test]
fn reports_being_written_are_unwritten_until_the_round_ends() {
    let actual = Actual::default();
    actual.seed("node-a", 1, Vec::new());
    actual.report("node-a", 1, running(), 10);
    let want = vec![Unwritten {
        node: "node-a".into(),
        app: "demo".into(),
        server: "web".into(),
        state: "running".into(),
        health: "healthy".into(),
    }];
    assert_eq!(actual.unwritten(), want);
    let taken = actual.take();
    assert_eq!(actual.unwritten(), want, "in flight");
    assert_eq!(taken.statuses.len(), 1);
    actual.put_back(Pending::default());
    assert!(actual.unwritten().is_empty());
}
