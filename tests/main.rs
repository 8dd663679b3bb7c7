//! All integration tests, in one binary: each module starts the real lockd.

mod support;

mod bench;
mod daemon;
