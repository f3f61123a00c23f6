//! The engine's integration tests, against a real PostgreSQL (a fresh
//! database per test) and real workers.

mod crash;
mod definitions;
mod effects;
mod leases;
mod operators;
mod provider;
mod retries;
mod runs;
mod signals;
mod support;
