use bursar::engine::{Definition, DefinitionError, Engine, Error, HandlerRegistry};

use crate::support::Counting;

fn handlers() -> HandlerRegistry {
    let mut h = HandlerRegistry::new();
    h.register("step", Counting::default());
    h
}

fn errors(toml: &str) -> Vec<DefinitionError> {
    Definition::parse(toml).unwrap().validate(&handlers())
}

const VALID: &str = r#"
name = "w"
version = 1
start = "a"
[steps.a]
handler = "step"
on = { ok = "b" }
[steps.b]
handler = "step"
wait_for = ["paid"]
on = { ok = "succeeded", deadline = "failed" }
"#;

#[test]
fn a_valid_definition_has_no_errors() {
    assert_eq!(errors(VALID), vec![]);
}

fn lazy_pool() -> sqlx::PgPool {
    sqlx::PgPool::connect_lazy("postgres://unused@127.0.0.1/unused").unwrap()
}

#[tokio::test]
async fn the_shipped_workflows_are_valid() {
    for def in bursar::workflows::builtin().unwrap() {
        assert_eq!(
            def.validate(&bursar::steps::registry(&bursar::steps::providers(&lazy_pool()))),
            vec![],
            "{}",
            def.name
        );
    }
}

#[test]
fn an_unknown_handler_is_refused() {
    let e = errors(&VALID.replace("handler = \"step\"\nwait_for", "handler = \"stpe\"\nwait_for"));
    assert!(
        e.contains(&DefinitionError::UnknownHandler { workflow: "w".into(), step: "b".into(), handler: "stpe".into() }),
        "{e:?}"
    );
}

#[test]
fn an_unreachable_step_is_refused() {
    let toml = format!("{VALID}\n[steps.orphan]\nhandler = \"step\"\non = {{ ok = \"succeeded\" }}\n");
    let e = errors(&toml);
    assert_eq!(
        e,
        vec![DefinitionError::Unreachable { workflow: "w".into(), step: "orphan".into(), start: "a".into() }]
    );
}

#[test]
fn an_outcome_that_leads_nowhere_is_refused() {
    let e = errors(&VALID.replace("on = { ok = \"b\" }", "on = { ok = \"c\" }"));
    assert!(
        e.contains(&DefinitionError::LeadsNowhere {
            workflow: "w".into(),
            step: "a".into(),
            outcome: "ok".into(),
            target: "c".into()
        }),
        "{e:?}"
    );
}

#[test]
fn an_outcome_the_handler_returns_must_be_routed() {
    let e = errors(&VALID.replace("on = { ok = \"b\" }", "on = { }"));
    assert!(
        e.contains(&DefinitionError::Unrouted {
            workflow: "w".into(),
            step: "a".into(),
            handler: "step".into(),
            outcome: "ok".into()
        }),
        "{e:?}"
    );
}

#[test]
fn a_step_that_waits_must_route_its_deadline() {
    let e = errors(&VALID.replace(", deadline = \"failed\"", ""));
    assert_eq!(
        e,
        vec![DefinitionError::Unrouted {
            workflow: "w".into(),
            step: "b".into(),
            handler: "step".into(),
            outcome: "deadline".into()
        }]
    );
}

#[test]
fn a_routed_outcome_the_handler_never_returns_is_a_typo() {
    let e = errors(&VALID.replace("on = { ok = \"b\" }", "on = { ok = \"b\", okk = \"b\" }"));
    assert_eq!(
        e,
        vec![DefinitionError::UnknownOutcome {
            workflow: "w".into(),
            step: "a".into(),
            handler: "step".into(),
            outcome: "okk".into()
        }]
    );
}

#[test]
fn a_missing_start_step_and_bad_syntax_are_refused() {
    assert!(
        errors(&VALID.replace("start = \"a\"", "start = \"x\""))
            .contains(&DefinitionError::MissingStart { workflow: "w".into(), start: "x".into() })
    );
    assert!(matches!(Definition::parse("name = 1"), Err(DefinitionError::Syntax(_))));
    assert!(Definition::parse(&VALID.replace("handler = \"step\"\non", "handlr = \"step\"\non")).is_err());
}

#[tokio::test]
async fn the_engine_refuses_to_start_with_an_invalid_definition() {
    let pool = sqlx::PgPool::connect_lazy("postgres://unused@127.0.0.1/unused").unwrap();
    let bad = Definition::parse(&VALID.replace("on = { ok = \"b\" }", "on = { ok = \"c\" }")).unwrap();
    let err = Engine::new(pool, vec![bad], handlers()).err().expect("refused");
    assert!(matches!(&err, Error::InvalidDefinitions(e) if !e.is_empty()));
    assert!(err.to_string().contains("leads to `c`, which is neither a step nor succeeded/failed/cancelled"), "{err}");
}

#[test]
fn a_definition_prints_as_a_mermaid_state_diagram() {
    let m = Definition::parse(VALID).unwrap().to_mermaid();
    assert!(m.starts_with("stateDiagram-v2\n"), "{m}");
    for line in ["[*] --> a", "a --> b : ok", "b --> succeeded : ok", "b --> failed : deadline", "succeeded --> [*]"] {
        assert!(m.contains(line), "missing `{line}` in\n{m}");
    }
}
