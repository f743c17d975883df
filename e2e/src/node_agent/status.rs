//! What the node agent knows about a pod, and the `PodStatus` it reports from that. Pure: the
//! runtime updates a [`PodRecord`]; [`pod_status`] turns it into the API's shape.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// How a container's process ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Terminated {
    pub exit_code: i32,
    pub signal: Option<i32>,
    /// `Completed`, `Error`, `OOMKilled`…
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    pub container_id: String,
}

impl Terminated {
    pub fn from_exit(
        status: std::process::ExitStatus,
        started_at: Timestamp,
        container_id: String,
    ) -> Self {
        use std::os::unix::process::ExitStatusExt;
        let signal = status.signal();
        // A shell reports death by a signal as 128 + the signal; so does the kubelet.
        let exit_code = status.code().unwrap_or(128 + signal.unwrap_or(0));
        Self {
            exit_code,
            signal,
            reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started_at,
            finished_at: Timestamp::now(),
            container_id,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Timestamp,
        container_id: String,
    },
    Terminated(Terminated),
}

/// One container as the node agent tracks it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerRecord {
    pub name: String,
    pub image: String,
    pub state: RunState,
    pub last_state: Option<Terminated>,
    pub restart_count: i32,
    pub started: bool,
    pub ready: bool,
}

impl ContainerRecord {
    pub fn new(name: &str, image: &str) -> Self {
        Self {
            name: name.into(),
            image: image.into(),
            state: RunState::Waiting {
                reason: "PodInitializing".into(),
                message: None,
            },
            last_state: None,
            restart_count: 0,
            started: false,
            ready: false,
        }
    }
}

/// A pod as the node agent tracks it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodRecord {
    pub restart_policy: String,
    pub pod_ip: Option<String>,
    pub host_ip: Option<String>,
    pub start_time: Timestamp,
    pub init_containers: Vec<ContainerRecord>,
    pub containers: Vec<ContainerRecord>,
    /// Every init container has completed.
    pub initialized: bool,
    /// The pod cannot go on (an init container failed under `restartPolicy: Never`).
    pub failed: bool,
}

fn phase(record: &PodRecord) -> &'static str {
    if record.failed {
        return "Failed";
    }
    if !record.initialized {
        return "Pending";
    }
    let containers = &record.containers;
    let ran = |c: &ContainerRecord| c.restart_count > 0 || c.last_state.is_some();
    let running = containers
        .iter()
        .any(|c| matches!(c.state, RunState::Running { .. }));
    let restarting = containers
        .iter()
        .any(|c| matches!(c.state, RunState::Waiting { .. }) && ran(c));
    let terminated: Vec<&Terminated> = containers
        .iter()
        .filter_map(|c| match &c.state {
            RunState::Terminated(t) => Some(t),
            _ => None,
        })
        .collect();
    if running || restarting {
        return "Running";
    }
    if containers.is_empty() || terminated.len() < containers.len() {
        return "Pending";
    }
    let all_succeeded = terminated.iter().all(|t| t.exit_code == 0);
    match record.restart_policy.as_str() {
        "Never" if !all_succeeded => "Failed",
        "Always" => "Running",
        "OnFailure" if !all_succeeded => "Running",
        _ => "Succeeded",
    }
}

fn time(t: &Timestamp) -> Time {
    Time(*t)
}

fn state(run: &RunState) -> ContainerState {
    match run {
        RunState::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..ContainerState::default()
        },
        RunState::Running { started_at, .. } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(time(started_at)),
            }),
            ..ContainerState::default()
        },
        RunState::Terminated(t) => ContainerState {
            terminated: Some(terminated(t)),
            ..ContainerState::default()
        },
    }
}

fn terminated(t: &Terminated) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        signal: t.signal,
        reason: Some(t.reason.clone()),
        message: t.message.clone(),
        started_at: Some(time(&t.started_at)),
        finished_at: Some(time(&t.finished_at)),
        container_id: Some(t.container_id.clone()),
    }
}

fn container_status(c: &ContainerRecord) -> ContainerStatus {
    let container_id = match &c.state {
        RunState::Running { container_id, .. } => Some(container_id.clone()),
        RunState::Terminated(t) => Some(t.container_id.clone()),
        RunState::Waiting { .. } => c.last_state.as_ref().map(|t| t.container_id.clone()),
    };
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: format!("local://{}", c.image),
        container_id,
        ready: c.ready,
        started: Some(c.started),
        restart_count: c.restart_count,
        state: Some(state(&c.state)),
        last_state: Some(
            c.last_state
                .as_ref()
                .map_or_else(ContainerState::default, |t| ContainerState {
                    terminated: Some(terminated(t)),
                    ..ContainerState::default()
                }),
        ),
        ..ContainerStatus::default()
    }
}

/// A condition, keeping its last transition time from `previous` when its status is the same.
fn condition(
    type_: &str,
    value: bool,
    reason: Option<&str>,
    previous: &[PodCondition],
) -> PodCondition {
    let status = if value { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .or_else(|| Some(Time(Timestamp::now())));
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.map(str::to_string),
        last_transition_time,
        ..PodCondition::default()
    }
}

/// The status the kubelet would report for `record`; `previous` keeps condition times stable.
pub fn pod_status(record: &PodRecord, previous: Option<&PodStatus>) -> PodStatus {
    let previous_conditions = previous
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let phase = phase(record);
    let done = matches!(phase, "Succeeded" | "Failed");
    let containers_ready =
        !record.containers.is_empty() && record.containers.iter().all(|c| c.ready) && !done;
    let not_ready_reason = if done {
        Some("PodCompleted")
    } else {
        Some("ContainersNotReady")
    };
    let ready_reason = if containers_ready {
        None
    } else {
        not_ready_reason
    };
    let initialized_reason = if record.initialized {
        None
    } else {
        Some("ContainersNotInitialized")
    };
    let conditions = vec![
        condition("PodScheduled", true, None, previous_conditions),
        condition(
            "Initialized",
            record.initialized,
            initialized_reason,
            previous_conditions,
        ),
        condition(
            "ContainersReady",
            containers_ready,
            ready_reason,
            previous_conditions,
        ),
        condition("Ready", containers_ready, ready_reason, previous_conditions),
    ];
    PodStatus {
        phase: Some(phase.into()),
        pod_ip: record.pod_ip.clone(),
        pod_ips: record
            .pod_ip
            .as_ref()
            .map(|ip| vec![PodIP { ip: ip.clone() }]),
        host_ip: record.host_ip.clone(),
        host_ips: record
            .host_ip
            .as_ref()
            .map(|ip| vec![HostIP { ip: ip.clone() }]),
        start_time: Some(time(&record.start_time)),
        conditions: Some(conditions),
        init_container_statuses: Some(
            record
                .init_containers
                .iter()
                .map(container_status)
                .collect(),
        ),
        container_statuses: Some(record.containers.iter().map(container_status).collect()),
        qos_class: previous.and_then(|p| p.qos_class.clone()),
        ..PodStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(policy: &str, containers: Vec<ContainerRecord>) -> PodRecord {
        PodRecord {
            restart_policy: policy.into(),
            pod_ip: Some("10.200.0.2".into()),
            host_ip: Some("10.200.0.1".into()),
            start_time: Timestamp::now(),
            init_containers: Vec::new(),
            containers,
            initialized: true,
            failed: false,
        }
    }

    fn running(name: &str, ready: bool) -> ContainerRecord {
        ContainerRecord {
            state: RunState::Running {
                started_at: Timestamp::now(),
                container_id: "process://42".into(),
            },
            started: true,
            ready,
            ..ContainerRecord::new(name, "img")
        }
    }

    fn exited(name: &str, code: i32) -> ContainerRecord {
        let now = Timestamp::now();
        ContainerRecord {
            state: RunState::Terminated(Terminated {
                exit_code: code,
                signal: None,
                reason: if code == 0 { "Completed" } else { "Error" }.into(),
                message: None,
                started_at: now,
                finished_at: now,
                container_id: "process://7".into(),
            }),
            ..ContainerRecord::new(name, "img")
        }
    }

    fn condition_of(status: &PodStatus, type_: &str) -> String {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_)
            .map(|c| c.status.clone())
            .unwrap_or_default()
    }

    #[test]
    fn a_pod_is_ready_only_when_every_container_is() {
        let status = pod_status(
            &record("Always", vec![running("a", true), running("b", false)]),
            None,
        );
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(condition_of(&status, "Ready"), "False");
        assert_eq!(condition_of(&status, "Initialized"), "True");
        let status = pod_status(
            &record("Always", vec![running("a", true), running("b", true)]),
            None,
        );
        assert_eq!(condition_of(&status, "Ready"), "True");
        assert_eq!(condition_of(&status, "ContainersReady"), "True");
        assert_eq!(status.pod_ips.map(|ips| ips.len()), Some(1));
    }

    #[test]
    fn a_pod_waiting_on_init_containers_is_pending() {
        let mut r = record("Always", vec![ContainerRecord::new("a", "img")]);
        r.initialized = false;
        r.init_containers = vec![running("init", false)];
        let status = pod_status(&r, None);
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        assert_eq!(condition_of(&status, "Initialized"), "False");
    }

    #[test]
    fn the_phase_of_exited_containers_follows_the_restart_policy() {
        let phase = |policy: &str, code: i32| {
            pod_status(&record(policy, vec![exited("a", code)]), None).phase
        };
        assert_eq!(phase("Never", 0).as_deref(), Some("Succeeded"));
        assert_eq!(phase("Never", 1).as_deref(), Some("Failed"));
        assert_eq!(phase("OnFailure", 0).as_deref(), Some("Succeeded"));
        assert_eq!(phase("OnFailure", 2).as_deref(), Some("Running"));
        assert_eq!(phase("Always", 0).as_deref(), Some("Running"));
    }

    #[test]
    fn a_crash_looping_container_keeps_the_pod_running_and_shows_its_last_state() {
        let mut c = exited("a", 3);
        let RunState::Terminated(last) = c.state.clone() else {
            unreachable!("built as terminated")
        };
        c.last_state = Some(last);
        c.restart_count = 2;
        c.state = RunState::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: None,
        };
        let status = pod_status(&record("Always", vec![c]), None);
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let cs = &status.container_statuses.expect("statuses")[0];
        assert_eq!(cs.restart_count, 2);
        let waiting = cs
            .state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .expect("waiting");
        assert_eq!(waiting.reason.as_deref(), Some("CrashLoopBackOff"));
        let last = cs
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .expect("last");
        assert_eq!(last.exit_code, 3);
        assert_eq!(cs.container_id.as_deref(), Some("process://7"));
    }

    #[test]
    fn condition_times_stay_while_the_condition_holds() {
        let r = record("Always", vec![running("a", true)]);
        let first = pod_status(&r, None);
        std::thread::sleep(std::time::Duration::from_millis(5));
        let second = pod_status(&r, Some(&first));
        assert_eq!(first.conditions, second.conditions);
    }
}
