//! The step handlers that workflow definitions name: glue between the engine
//! and the domain, providers, LMS and notifications.

mod noop;
pub mod purchase;

use sqlx::PgPool;

use crate::engine::HandlerRegistry;
use crate::providers::{Providers, sandbox::Sandbox};

/// The providers this deployment can use.
pub fn providers(pool: &PgPool) -> Providers {
    let mut providers = Providers::default();
    providers.register(Sandbox::new(pool.clone()));
    providers
}

pub fn registry(providers: &Providers) -> HandlerRegistry {
    let mut handlers = HandlerRegistry::new();
    handlers.register("noop", noop::Noop);
    handlers.register("purchase.reserve_seats", purchase::ReserveSeats);
    handlers.register("purchase.authorize", purchase::Authorize(providers.clone()));
    handlers.register("purchase.capture", purchase::Capture(providers.clone()));
    let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build().expect("an HTTP client");
    handlers.register("purchase.enroll", purchase::Enroll { http });
    handlers.register("purchase.refund_all", purchase::RefundAll(providers.clone()));
    handlers.register("purchase.notify", purchase::Notify);
    handlers.register("purchase.release_seats", purchase::ReleaseSeats(providers.clone()));
    handlers
}
