//! The field controller's terminal UI, as a pure library.
//!
//! `App::handle` takes an `Input` (a key, an agent's answer or event, a line
//! going up or down, a tick with the current time) and returns the
//! `Command`s the binary should carry out; `App::render` draws the current
//! screen into a ratatui `Frame`. Nothing here does I/O, starts a thread or
//! reads a clock, so every screen can be tested headless with ratatui's
//! `TestBackend`, and the binary owns the lines, the PINs it sends and the
//! terminal.
//!
//! The screens: the rack (one row per host), a host (its VMs and the plan),
//! an evacuation's progress (a gauge per VM), the verdict (full screen,
//! SAFE TO POWER OFF or NOT SAFE with every reason), and locate (a VM
//! anywhere in the rack). A help line at the bottom lists the keys.

pub mod app;
pub mod input;
mod json;
pub mod model;
mod render;
pub mod text;

pub use app::{App, Confirm, Locate, PinPrompt, Screen};
pub use input::{Answer, Command, Input, Key, Millis, Pin};
