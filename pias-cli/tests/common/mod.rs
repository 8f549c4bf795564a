//! Helpers shared by pias-cli's integration test binaries.

pub(crate) mod lab;
