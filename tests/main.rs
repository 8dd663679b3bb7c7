//! All integration tests, in one binary: each module starts the real lockd.

mod support;

mod daemon;
mod proof;

mod crash;
mod disk;
mod durability;
mod history;
mod hostile;
mod names;
