//! Migrations out of this host.

pub mod policy;
pub mod run;
