use async_trait::async_trait;

use crate::engine::{Outcome, StepCtx, StepHandler};

/// Does nothing, durably: measures what the engine costs per step.
pub struct Noop;

#[async_trait]
impl StepHandler for Noop {
    fn outcomes(&self) -> &[&'static str] {
        &["ok"]
    }

    async fn run(&self, _ctx: &mut StepCtx) -> Outcome {
        Outcome::next("ok")
    }
}
