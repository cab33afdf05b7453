//! Migrations out of this host.

pub mod announce;
pub mod nwfilter;
pub mod policy;
pub mod rarp;
pub mod run;
pub mod timeline;
pub mod tls;
