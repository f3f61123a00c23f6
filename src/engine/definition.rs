//! Workflow definitions: data in `workflows/*.toml`, checked before any worker
//! runs them. A definition that names a handler nobody registered, has a step
//! nothing leads to, or an outcome that leads nowhere is refused at start, so
//! such a mistake is found by a deploy's first second and not by a customer's
//! purchase three weeks later.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::{self, Write as _};
use std::time::Duration;

use serde::Deserialize;

use super::handler::HandlerRegistry;
use super::retry::RetryPolicy;

/// The outcome label that a wait's deadline produces.
pub const DEADLINE: &str = "deadline";

/// Where an outcome leads: another step, or one of the terminal states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Step(String),
    Succeeded,
    /// The run fails with the outcome's label as its failure code.
    Failed,
    Cancelled,
}

impl Target {
    fn parse(s: &str) -> Target {
        match s {
            "succeeded" => Target::Succeeded,
            "failed" => Target::Failed,
            "cancelled" => Target::Cancelled,
            step => Target::Step(step.to_owned()),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Step(s) => f.write_str(s),
            Target::Succeeded => f.write_str("succeeded"),
            Target::Failed => f.write_str("failed"),
            Target::Cancelled => f.write_str("cancelled"),
        }
    }
}

const TERMINALS: [&str; 3] = ["succeeded", "failed", "cancelled"];

#[derive(Debug, Clone)]
pub struct StepDef {
    pub handler: String,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// outcome label -> target
    pub on: BTreeMap<String, Target>,
    /// Signals this step may wait for. A step that waits must route `deadline`.
    pub wait_for: Vec<String>,
    /// Where a cancel leads while the run is at this step (overrides the workflow's).
    pub on_cancel: Option<Target>,
}

#[derive(Debug, Clone)]
pub struct Definition {
    pub name: String,
    pub version: u32,
    pub start: String,
    pub on_cancel: Option<Target>,
    pub steps: BTreeMap<String, StepDef>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DefinitionError {
    #[error("{0}")]
    Syntax(String),
    #[error("workflow `{workflow}`: the start step `{start}` is not defined")]
    MissingStart { workflow: String, start: String },
    #[error("workflow `{workflow}`: step `{step}` names handler `{handler}`, which is not registered")]
    UnknownHandler { workflow: String, step: String, handler: String },
    #[error("workflow `{workflow}`: step `{step}` cannot be reached from the start step `{start}`")]
    Unreachable { workflow: String, step: String, start: String },
    #[error(
        "workflow `{workflow}`: outcome `{outcome}` of step `{step}` leads to `{target}`, which is neither a step nor succeeded/failed/cancelled"
    )]
    LeadsNowhere { workflow: String, step: String, outcome: String, target: String },
    #[error(
        "workflow `{workflow}`: handler `{handler}` of step `{step}` can return `{outcome}`, but the step does not say where it leads"
    )]
    Unrouted { workflow: String, step: String, handler: String, outcome: String },
    #[error("workflow `{workflow}`: step `{step}` routes outcome `{outcome}`, which handler `{handler}` never returns")]
    UnknownOutcome { workflow: String, step: String, handler: String, outcome: String },
    #[error("workflow `{workflow}`: {message}")]
    Invalid { workflow: String, message: String },
}

// The file format, as written by people. Turned into `Definition` by `parse`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefinition {
    name: String,
    version: u32,
    start: String,
    on_cancel: Option<String>,
    steps: BTreeMap<String, RawStep>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    handler: String,
    #[serde(default, with = "humantime_serde_opt")]
    timeout: Option<Duration>,
    #[serde(default)]
    retry: RetryPolicy,
    #[serde(default)]
    on: BTreeMap<String, String>,
    #[serde(default)]
    wait_for: Vec<String>,
    on_cancel: Option<String>,
}

pub(crate) mod humantime_serde_opt {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom)).transpose()
    }
}

pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(30);

impl Definition {
    /// Parses a definition. Structure only; `validate` checks it against handlers.
    pub fn parse(toml_text: &str) -> Result<Definition, DefinitionError> {
        let raw: RawDefinition = toml::from_str(toml_text).map_err(|e| DefinitionError::Syntax(e.to_string()))?;
        let steps = raw
            .steps
            .into_iter()
            .map(|(name, s)| {
                let step = StepDef {
                    handler: s.handler,
                    timeout: s.timeout.unwrap_or(DEFAULT_STEP_TIMEOUT),
                    retry: s.retry,
                    on: s.on.iter().map(|(k, v)| (k.clone(), Target::parse(v))).collect(),
                    wait_for: s.wait_for,
                    on_cancel: s.on_cancel.as_deref().map(Target::parse),
                };
                (name, step)
            })
            .collect();
        Ok(Definition {
            name: raw.name,
            version: raw.version,
            start: raw.start,
            on_cancel: raw.on_cancel.as_deref().map(Target::parse),
            steps,
        })
    }

    /// Every reason this definition cannot run with these handlers; empty if it can.
    pub fn validate(&self, handlers: &HandlerRegistry) -> Vec<DefinitionError> {
        let wf = || self.name.clone();
        let mut errors = Vec::new();
        let invalid = |message: String| DefinitionError::Invalid { workflow: wf(), message };

        if self.name.is_empty() {
            errors.push(invalid("the name is empty".into()));
        }
        if self.version == 0 {
            errors.push(invalid("versions start at 1".into()));
        }
        if !self.steps.contains_key(&self.start) {
            errors.push(DefinitionError::MissingStart { workflow: wf(), start: self.start.clone() });
        }
        let leads_nowhere = |step: &str, outcome: &str, target: &Target| match target {
            Target::Step(s) if !self.steps.contains_key(s) => Some(DefinitionError::LeadsNowhere {
                workflow: wf(),
                step: step.to_owned(),
                outcome: outcome.to_owned(),
                target: s.clone(),
            }),
            _ => None,
        };
        if let Some(t) = &self.on_cancel {
            errors.extend(leads_nowhere("(workflow)", "on_cancel", t));
        }

        for (name, step) in &self.steps {
            if TERMINALS.contains(&name.as_str()) {
                errors.push(invalid(format!("`{name}` is a terminal state and cannot name a step")));
            }
            if let Err(e) = step.retry.check() {
                errors.push(invalid(format!("step `{name}`: {e}")));
            }
            if step.timeout.is_zero() {
                errors.push(invalid(format!("step `{name}`: the timeout must be positive")));
            }
            for signal in &step.wait_for {
                if signal.is_empty() || signal.contains(',') {
                    errors.push(invalid(format!(
                        "step `{name}`: signal name `{signal}` must be non-empty and without commas"
                    )));
                }
            }
            for (outcome, target) in &step.on {
                errors.extend(leads_nowhere(name, outcome, target));
            }
            if let Some(t) = &step.on_cancel {
                errors.extend(leads_nowhere(name, "on_cancel", t));
            }

            let Some(declared) = handlers.outcomes(&step.handler) else {
                errors.push(DefinitionError::UnknownHandler {
                    workflow: wf(),
                    step: name.clone(),
                    handler: step.handler.clone(),
                });
                continue;
            };
            let mut possible: BTreeSet<&str> = declared.iter().copied().collect();
            if !step.wait_for.is_empty() {
                possible.insert(DEADLINE);
            }
            for outcome in &possible {
                if !step.on.contains_key(*outcome) {
                    errors.push(DefinitionError::Unrouted {
                        workflow: wf(),
                        step: name.clone(),
                        handler: step.handler.clone(),
                        outcome: (*outcome).to_owned(),
                    });
                }
            }
            for outcome in step.on.keys() {
                if !possible.contains(outcome.as_str()) {
                    errors.push(DefinitionError::UnknownOutcome {
                        workflow: wf(),
                        step: name.clone(),
                        handler: step.handler.clone(),
                        outcome: outcome.clone(),
                    });
                }
            }
        }

        if self.steps.contains_key(&self.start) {
            let reachable = self.reachable();
            for name in self.steps.keys() {
                if !reachable.contains(&name.as_str()) {
                    errors.push(DefinitionError::Unreachable {
                        workflow: wf(),
                        step: name.clone(),
                        start: self.start.clone(),
                    });
                }
            }
        }
        errors
    }

    /// Steps reachable from the start through outcomes and cancel paths, in
    /// breadth-first order.
    fn reachable(&self) -> Vec<&str> {
        let mut seen: Vec<&str> = vec![self.start.as_str()];
        let mut queue = VecDeque::from([self.start.as_str()]);
        let targets_of = |name: &str| -> Vec<&Target> {
            let step = &self.steps[name];
            step.on.values().chain(step.on_cancel.iter()).collect()
        };
        let mut next: Vec<&Target> = self.on_cancel.iter().collect();
        loop {
            for t in next.drain(..) {
                if let Target::Step(s) = t
                    && let Some((name, _)) = self.steps.get_key_value(s)
                    && !seen.contains(&name.as_str())
                {
                    seen.push(name);
                    queue.push_back(name);
                }
            }
            match queue.pop_front() {
                Some(name) => next = targets_of(name),
                None => return seen,
            }
        }
    }

    pub fn step(&self, name: &str) -> Option<&StepDef> {
        self.steps.get(name)
    }

    /// Where a cancel leads from `step`: the step's own cancel path, else the
    /// workflow's, else straight to `cancelled`.
    pub fn cancel_target(&self, step: &str) -> Target {
        self.steps
            .get(step)
            .and_then(|s| s.on_cancel.clone())
            .or_else(|| self.on_cancel.clone())
            .unwrap_or(Target::Cancelled)
    }

    /// The definition as a Mermaid state diagram.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("stateDiagram-v2\n");
        let _ = writeln!(out, "    %% {} v{}", self.name, self.version);
        let _ = writeln!(out, "    [*] --> {}", self.start);
        let node = |t: &Target| match t {
            Target::Step(s) => s.clone(),
            other => other.to_string(),
        };
        let mut terminals = BTreeSet::new();
        let mut order = self.reachable();
        order.extend(self.steps.keys().map(String::as_str).filter(|s| !order.contains(s)).collect::<Vec<_>>());
        for name in order {
            let step = &self.steps[name];
            let _ = writeln!(out, "    {name} : {name}\\n{}", step.handler);
            if !step.wait_for.is_empty() {
                let _ = writeln!(out, "    note right of {name} : waits for {}", step.wait_for.join(", "));
            }
            for (outcome, target) in &step.on {
                if !matches!(target, Target::Step(_)) {
                    terminals.insert(node(target));
                }
                let _ = writeln!(out, "    {name} --> {} : {outcome}", node(target));
            }
            if let Some(t) = &step.on_cancel {
                terminals.extend((!matches!(t, Target::Step(_))).then(|| node(t)));
                let _ = writeln!(out, "    {name} --> {} : cancel", node(t));
            }
        }
        if let Some(t) = &self.on_cancel {
            terminals.extend((!matches!(t, Target::Step(_))).then(|| node(t)));
            let _ = writeln!(out, "    note left of {} : cancel (any step) leads here", node(t));
        }
        for t in terminals {
            let _ = writeln!(out, "    {t} --> [*]");
        }
        out
    }
}
