//! Pure types and rules, no I/O: built only through their checked
//! constructors, unit-tested without a database.

pub mod money;
pub mod offering;
pub mod purchase;
pub mod settings;
