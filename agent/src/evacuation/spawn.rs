//! How the controller starts its threads: behind a trait, so a test can
//! make a thread fail to start and see the run end anyway.

/// Starts `f` on a thread of its own named `name`.
pub trait Spawner: Send + Sync + std::fmt::Debug {
    fn spawn(&self, name: &str, f: Box<dyn FnOnce() + Send>) -> std::io::Result<()>;
}

/// Real threads.
#[derive(Debug, Clone, Copy, Default)]
pub struct Threads;

impl Spawner for Threads {
    fn spawn(&self, name: &str, f: Box<dyn FnOnce() + Send>) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name(name.chars().take(15).collect())
            .spawn(f)
            .map(|_| ())
    }
}
