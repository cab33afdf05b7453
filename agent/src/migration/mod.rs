//! Migrations out of this host.

pub mod nwfilter;
pub mod policy;
pub mod run;
pub mod timeline;
pub mod tls;
