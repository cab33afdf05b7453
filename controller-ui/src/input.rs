//! What goes into the app (keys, data, line changes, time) and what comes
//! out (commands for the binary to carry out).

use std::fmt;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use serde_json::Value;

/// A moment on the binary's monotonic clock, in milliseconds from whatever
/// origin it chose. The app never reads a clock: time comes in with
/// `Input::Tick` and with line changes, so tests decide what "now" is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Millis(pub u64);

impl Millis {
    pub fn from_secs(s: u64) -> Self {
        Self(s.saturating_mul(1000))
    }

    /// Whole seconds from `earlier` to `self` (0 if the clock went back).
    pub fn secs_since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0) / 1000
    }
}

/// A key, independent of the terminal backend. `Key::from_crossterm`
/// converts the events a crossterm terminal reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Enter,
    Esc,
    Backspace,
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
    Tab,
    /// Ctrl-C: cancels a prompt, else quits.
    Interrupt,
}

impl Key {
    /// `None` for key releases and repeats of no interest, and for keys the
    /// UI does not use.
    pub fn from_crossterm(ev: KeyEvent) -> Option<Self> {
        if ev.kind == KeyEventKind::Release {
            return None;
        }
        if ev.modifiers.contains(KeyModifiers::CONTROL) {
            return matches!(ev.code, KeyCode::Char('c' | 'C')).then_some(Self::Interrupt);
        }
        Some(match ev.code {
            KeyCode::Char(c) => Self::Char(c),
            KeyCode::Enter => Self::Enter,
            KeyCode::Esc => Self::Esc,
            KeyCode::Backspace => Self::Backspace,
            KeyCode::Up => Self::Up,
            KeyCode::Down => Self::Down,
            KeyCode::PageUp => Self::PageUp,
            KeyCode::PageDown => Self::PageDown,
            KeyCode::Home => Self::Home,
            KeyCode::End => Self::End,
            KeyCode::Tab => Self::Tab,
            _ => return None,
        })
    }
}

/// An answer's `data`, by the command it answers. The app reads each with
/// the model's tolerant constructors.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Status(Value),
    Hosts(Value),
    Vms(Value),
    Plan(Value),
    Jobs(Value),
    Locate(Value),
    /// `evacuate`'s answer: the run started, with its plan.
    Evacuate(Value),
    /// `identify`'s answer.
    Identify,
    /// `login`'s answer.
    LoggedIn,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Key(Key),
    /// A successful answer from `host`'s agent.
    Answer {
        host: String,
        answer: Answer,
    },
    /// An error answer (`error.code`, `error.message`) from `host`'s agent,
    /// e.g. `busy` or `auth_required`: shown to the person.
    Refused {
        host: String,
        code: String,
        message: String,
    },
    /// An event (`event`, `data`) that arrived on `host`'s line.
    Event {
        host: String,
        name: String,
        data: Value,
    },
    LineConnecting {
        host: String,
        at: Millis,
    },
    LineUp {
        host: String,
        at: Millis,
    },
    /// The line to `host` went away; `reason` says why and what the binary
    /// does about it (e.g. "reconnecting").
    LineDropped {
        host: String,
        reason: String,
        at: Millis,
    },
    Tick {
        now: Millis,
    },
    /// `host` wants a PIN before it runs what was asked.
    PinNeeded {
        host: String,
    },
}

/// A PIN, kept out of every `Debug` output and every screen.
#[derive(Clone, PartialEq, Eq)]
pub struct Pin(String);

impl Pin {
    pub fn new(pin: String) -> Self {
        Self(pin)
    }

    /// The PIN itself, for the binary to send in its `login` request.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(<redacted>)")
    }
}

/// What the binary should do. The app only asks; the binary talks to the
/// agents and feeds their answers back as `Input`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Evacuate {
        host: String,
        poweroff: bool,
    },
    Plan {
        host: String,
    },
    Identify {
        host: String,
    },
    /// Ask the agents where a VM is (it is not in the model).
    Locate {
        vm: String,
    },
    /// Ask every line for status, hosts, vms and jobs again.
    Refresh,
    Login {
        host: String,
        pin: Pin,
    },
    Quit,
}
