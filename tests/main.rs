//! All integration tests, in one binary: each module starts the real lockd.

mod support;

mod cluster;
mod daemon;
mod lockcmd;
mod proof;
mod systemd;

mod crash;
mod disk;
mod durability;
mod fencing;
mod history;
mod hostile;
mod legacy;
mod names;
mod stalls;
