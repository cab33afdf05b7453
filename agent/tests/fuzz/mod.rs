//! The console fuzz harness (`make fuzz`): generated inputs, a fake
//! backend, the invariants, and the runner.

pub mod backend;
pub mod check;
pub mod gen;
pub mod rng;
pub mod run;
