//! Integration tests against a real PostgreSQL (a fresh database per test),
//! real workers and the real HTTP API on loopback.

mod app;
mod crash;
mod creates;
mod definitions;
mod effects;
mod floor;
mod leases;
mod lms;
mod metrics;
mod moodle;
mod notifications;
mod offerings;
mod openapi;
mod operators;
mod ops;
mod provider;
mod purchases;
mod retries;
mod runs;
mod sandbox;
mod secrets;
mod signals;
mod staged;
mod support;
mod webhooks;
