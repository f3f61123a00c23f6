//! The step handlers that workflow definitions name: glue between the engine
//! and the domain, providers, LMS and notifications.

mod noop;

use crate::engine::HandlerRegistry;

pub fn registry() -> HandlerRegistry {
    let mut handlers = HandlerRegistry::new();
    handlers.register("noop", noop::Noop);
    handlers
}
