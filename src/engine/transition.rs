//! From a step's outcome to the run's next state: a pure function of the
//! definition, the step, the attempt and the outcome. The worker only stores
//! what this decides.

use std::fmt;

use chrono::{DateTime, Utc};

use super::definition::{Definition, Target};
use super::handler::Outcome;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Ready,
    Running,
    Waiting,
    Succeeded,
    Failed,
    Cancelled,
    Parked,
}

impl RunStatus {
    pub const ALL: [RunStatus; 7] = [
        RunStatus::Ready,
        RunStatus::Running,
        RunStatus::Waiting,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::Parked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Ready => "ready",
            RunStatus::Running => "running",
            RunStatus::Waiting => "waiting",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Parked => "parked",
        }
    }

    pub fn parse(s: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The run's state after an attempt, as the completion stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub status: RunStatus,
    pub step: String,
    /// Attempts of `step` so far: kept on a retry, 0 for a step not yet tried.
    pub attempt: u32,
    pub wake_at: Option<DateTime<Utc>>,
    pub waiting_for: Vec<String>,
    pub failure_code: Option<String>,
    pub error: Option<String>,
    /// What the history row says of the attempt that just ended.
    pub history_outcome: String,
    /// The next step may run at once in the same worker under the same lease.
    pub continue_in_place: bool,
}

impl Transition {
    pub fn park(step: &str, attempt: u32, reason: String) -> Transition {
        Transition {
            status: RunStatus::Parked,
            step: step.to_owned(),
            attempt,
            wake_at: None,
            waiting_for: vec![],
            failure_code: None,
            error: Some(reason),
            history_outcome: "park".into(),
            continue_in_place: false,
        }
    }

    /// Where `target` leads, as reached from `step` by `label`.
    pub fn to_target(step: &str, attempt: u32, label: &str, target: &Target, now: DateTime<Utc>) -> Transition {
        let ended = |status: RunStatus, failure_code: Option<String>| Transition {
            status,
            step: step.to_owned(),
            attempt,
            wake_at: None,
            waiting_for: vec![],
            failure_code,
            error: None,
            history_outcome: format!("next:{label}"),
            continue_in_place: false,
        };
        match target {
            Target::Step(next) => Transition {
                status: RunStatus::Ready,
                step: next.clone(),
                attempt: 0,
                wake_at: Some(now),
                waiting_for: vec![],
                failure_code: None,
                error: None,
                history_outcome: format!("next:{label}"),
                continue_in_place: true,
            },
            Target::Succeeded => ended(RunStatus::Succeeded, None),
            Target::Failed => ended(RunStatus::Failed, Some(label.to_owned())),
            Target::Cancelled => ended(RunStatus::Cancelled, None),
        }
    }
}

/// Decide the run's next state after `attempt` of `step` ended with `outcome`.
pub fn plan(def: &Definition, step: &str, attempt: u32, outcome: Outcome, now: DateTime<Utc>) -> Transition {
    let Some(step_def) = def.step(step) else {
        return Transition::park(step, attempt, format!("step `{step}` is not in {} v{}", def.name, def.version));
    };
    match outcome {
        Outcome::Next(label) => match step_def.on.get(&label) {
            Some(target) => Transition::to_target(step, attempt, &label, target, now),
            None => Transition::park(
                step,
                attempt,
                format!("step `{step}` returned outcome `{label}`, which the definition does not route"),
            ),
        },
        Outcome::Retry { error, after } => {
            if attempt >= step_def.retry.max_attempts {
                let mut t =
                    Transition::park(step, attempt, format!("retries exhausted after {attempt} attempts: {error}"));
                t.history_outcome = "retry".into();
                t.error = Some(format!("retries exhausted after {attempt} attempts: {error}"));
                return t;
            }
            let delay = after.unwrap_or_else(|| step_def.retry.delay_after(attempt));
            Transition {
                status: RunStatus::Ready,
                step: step.to_owned(),
                attempt,
                wake_at: Some(now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX)),
                waiting_for: vec![],
                failure_code: None,
                error: Some(error),
                history_outcome: "retry".into(),
                continue_in_place: false,
            }
        }
        Outcome::Wait { signals, deadline } => {
            if signals.is_empty() {
                return Transition::park(step, attempt, format!("step `{step}` asked to wait for no signal"));
            }
            if let Some(undeclared) = signals.iter().find(|s| !step_def.wait_for.contains(s)) {
                return Transition::park(
                    step,
                    attempt,
                    format!("step `{step}` waits for `{undeclared}`, which its definition does not list in wait_for"),
                );
            }
            Transition {
                status: RunStatus::Waiting,
                step: step.to_owned(),
                attempt: 0,
                wake_at: deadline,
                waiting_for: signals,
                failure_code: None,
                error: None,
                history_outcome: "wait".into(),
                continue_in_place: false,
            }
        }
        Outcome::Fail { code, message } => Transition {
            status: RunStatus::Failed,
            step: step.to_owned(),
            attempt,
            wake_at: None,
            waiting_for: vec![],
            failure_code: Some(code.clone()),
            error: message,
            history_outcome: format!("fail:{code}"),
            continue_in_place: false,
        },
        Outcome::Park(reason) => Transition::park(step, attempt, reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn def() -> Definition {
        Definition::parse(
            r#"
            name = "t"
            version = 1
            start = "a"
            [steps.a]
            handler = "h"
            retry = { max_attempts = 3, initial = "1s", max = "10s", jitter = false }
            on = { ok = "b", no = "failed", done = "succeeded" }
            [steps.b]
            handler = "h"
            wait_for = ["paid", "declined"]
            on = { ok = "succeeded", deadline = "a" }
            "#,
        )
        .unwrap()
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    #[test]
    fn next_to_a_step_continues_in_place_with_a_fresh_attempt_count() {
        let t = plan(&def(), "a", 2, Outcome::next("ok"), now());
        assert_eq!((t.status, t.step.as_str(), t.attempt, t.continue_in_place), (RunStatus::Ready, "b", 0, true));
        assert_eq!(t.history_outcome, "next:ok");
    }

    #[test]
    fn a_route_to_failed_uses_the_label_as_failure_code() {
        let t = plan(&def(), "a", 1, Outcome::next("no"), now());
        assert_eq!((t.status, t.failure_code.as_deref()), (RunStatus::Failed, Some("no")));
        let t = plan(&def(), "a", 1, Outcome::next("done"), now());
        assert_eq!(t.status, RunStatus::Succeeded);
    }

    #[test]
    fn retry_waits_the_policys_delay_then_parks_when_attempts_run_out() {
        let t = plan(&def(), "a", 2, Outcome::retry("boom"), now());
        assert_eq!(t.status, RunStatus::Ready);
        assert_eq!(t.wake_at, Some(now() + chrono::Duration::seconds(2)));
        assert_eq!(t.attempt, 2);

        let t = plan(&def(), "a", 1, Outcome::Retry { error: "x".into(), after: Some(Duration::from_secs(7)) }, now());
        assert_eq!(t.wake_at, Some(now() + chrono::Duration::seconds(7)));

        let t = plan(&def(), "a", 3, Outcome::retry("boom"), now());
        assert_eq!(t.status, RunStatus::Parked);
        assert!(t.error.unwrap().contains("retries exhausted after 3 attempts: boom"));
    }

    #[test]
    fn an_unrouted_label_or_undeclared_signal_parks_instead_of_guessing() {
        assert_eq!(plan(&def(), "a", 1, Outcome::next("typo"), now()).status, RunStatus::Parked);
        let t = plan(&def(), "b", 1, Outcome::wait(&["refunded"], None), now());
        assert_eq!(t.status, RunStatus::Parked);
    }

    #[test]
    fn wait_stores_signals_and_deadline() {
        let deadline = now() + chrono::Duration::hours(1);
        let t = plan(&def(), "b", 1, Outcome::wait(&["paid", "declined"], Some(deadline)), now());
        assert_eq!(t.status, RunStatus::Waiting);
        assert_eq!(t.waiting_for, ["paid", "declined"]);
        assert_eq!(t.wake_at, Some(deadline));
    }
}
