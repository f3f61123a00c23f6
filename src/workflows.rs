//! The workflow definitions shipped in `workflows/`, compiled in so a binary
//! always runs the definitions it was tested with. Keep every version that a
//! run in flight may still use: a run finishes on the version it started with.

use crate::engine::{Definition, DefinitionError};

const FILES: &[(&str, &str)] = &[
    ("noop.toml", include_str!("../workflows/noop.toml")),
    ("purchase.toml", include_str!("../workflows/purchase.toml")),
];

pub fn builtin() -> Result<Vec<Definition>, DefinitionError> {
    FILES
        .iter()
        .map(|(file, text)| {
            Definition::parse(text).map_err(|e| DefinitionError::Syntax(format!("workflows/{file}: {e}")))
        })
        .collect()
}
