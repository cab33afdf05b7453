//! The app: screens, keys, and how inputs change what is shown.
//!
//! `handle` is the only way state changes; `render` only reads. Keys go to
//! the topmost thing on screen: the PIN prompt, then a verdict banner, then
//! the evacuation confirmation, then the screen itself. So a key meant for
//! one of them never reaches what lies underneath (a `y` typed while a
//! banner shows cannot confirm an evacuation hidden behind it).

use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;

use ratatui::Frame;

use crate::input::{Answer, Command, Input, Key, Millis, Pin};
use crate::model::{
    jobs_from_json, Event, HostsEntry, Located, Plan, Rack, Status, Verdict, VmList,
};

/// How long a message (an agent's refusal, "asked ha for a plan") stays on
/// the message line.
const MESSAGE_FOR_MS: u64 = 15_000;

/// A PIN is 1 to 128 bytes on the agent's side; longer typing is refused
/// here so a stuck key cannot grow it without bound.
const PIN_MAX: usize = 128;

/// A VM name is at most 128 bytes.
const QUERY_MAX: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screen {
    Rack,
    Host(String),
    Progress(String),
    Locate,
}

/// Waiting for y/n before an evacuation is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirm {
    pub host: String,
    pub poweroff: bool,
}

/// The masked PIN prompt for one host's line.
#[derive(Clone, PartialEq, Eq)]
pub struct PinPrompt {
    pub host: String,
    typed: String,
}

impl PinPrompt {
    /// How many characters were typed: the prompt shows this many `*`.
    pub fn len(&self) -> usize {
        self.typed.chars().count()
    }

    pub fn is_empty(&self) -> bool {
        self.typed.is_empty()
    }
}

impl fmt::Debug for PinPrompt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinPrompt")
            .field("host", &self.host)
            .field("typed", &format_args!("<{} chars>", self.len()))
            .finish()
    }
}

/// The locate screen's query and what came back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Locate {
    pub query: String,
    pub selected: usize,
    /// The agents were asked for the current query.
    pub asked: bool,
    /// Answers from agents: (the host that answered, what it said).
    pub answers: Vec<(String, Located)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub(crate) rack: Rack,
    pub(crate) now: Millis,
    pub(crate) screen: Screen,
    /// The host the rack screen's cursor is on, by name, so a host joining
    /// the list does not move the cursor to another one.
    pub(crate) selected_host: Option<String>,
    pub(crate) scroll: u16,
    /// The furthest `scroll` can go, as the last frame drawn found it
    /// (content taller than the screen by this many lines): Down stops
    /// there, so Up moves at once however often Down was pressed.
    pub(crate) scroll_max: Cell<u16>,
    pub(crate) selected_job: usize,
    pub(crate) confirm: Option<Confirm>,
    pub(crate) pin: Option<PinPrompt>,
    pub(crate) pins_waiting: VecDeque<String>,
    pub(crate) banners: VecDeque<Verdict>,
    pub(crate) banner_scroll: u16,
    pub(crate) banner_scroll_max: Cell<u16>,
    pub(crate) locate: Locate,
    pub(crate) message: Option<(String, Millis)>,
}

/// `scroll` moved by `by` lines, kept within 0 and the last frame's `max`.
fn scrolled(scroll: u16, by: i32, max: &Cell<u16>) -> u16 {
    let max = i32::from(max.get());
    (i32::from(scroll).min(max) + by).clamp(0, max) as u16
}

impl Default for App {
    fn default() -> Self {
        Self::new()
    }
}

impl App {
    pub fn new() -> Self {
        Self {
            rack: Rack::new(),
            now: Millis(0),
            screen: Screen::Rack,
            selected_host: None,
            scroll: 0,
            scroll_max: Cell::new(u16::MAX),
            selected_job: 0,
            confirm: None,
            pin: None,
            pins_waiting: VecDeque::new(),
            banners: VecDeque::new(),
            banner_scroll: 0,
            banner_scroll_max: Cell::new(u16::MAX),
            locate: Locate::default(),
            message: None,
        }
    }

    pub fn rack(&self) -> &Rack {
        &self.rack
    }

    pub fn screen(&self) -> &Screen {
        &self.screen
    }

    pub fn now(&self) -> Millis {
        self.now
    }

    /// The verdict banner on screen, if any.
    pub fn banner(&self) -> Option<&Verdict> {
        self.banners.front()
    }

    pub fn confirming(&self) -> Option<&Confirm> {
        self.confirm.as_ref()
    }

    pub fn pin_prompt(&self) -> Option<&PinPrompt> {
        self.pin.as_ref()
    }

    pub fn locate_state(&self) -> &Locate {
        &self.locate
    }

    /// The message line's text while it is fresh.
    pub fn message(&self) -> Option<&str> {
        self.message
            .as_ref()
            .filter(|(_, at)| self.now.0.saturating_sub(at.0) < MESSAGE_FOR_MS)
            .map(|(m, _)| m.as_str())
    }

    pub fn render(&self, frame: &mut Frame) {
        crate::render::render(self, frame);
    }

    pub fn handle(&mut self, input: Input) -> Vec<Command> {
        match input {
            Input::Key(key) => self.on_key(key),
            Input::Answer { host, answer } => {
                self.on_answer(&host, answer);
                Vec::new()
            }
            Input::Refused {
                host,
                code,
                message,
            } => {
                self.say(format!("{host}: {code}: {message}"));
                Vec::new()
            }
            Input::Event { host, name, data } => self.on_event(&host, &name, &data),
            Input::LineConnecting { host, at } => {
                self.advance(at);
                self.rack.line_connecting(&host, at);
                Vec::new()
            }
            Input::LineUp { host, at } => {
                self.advance(at);
                self.rack.line_up(&host, at);
                Vec::new()
            }
            Input::LineDropped { host, reason, at } => {
                self.advance(at);
                self.rack.line_dropped(&host, &reason, at);
                Vec::new()
            }
            Input::Tick { now } => {
                self.advance(now);
                Vec::new()
            }
            Input::PinNeeded { host } => {
                self.ask_pin(host);
                Vec::new()
            }
        }
    }

    fn advance(&mut self, at: Millis) {
        self.now = self.now.max(at);
    }

    fn say(&mut self, text: String) {
        self.message = Some((text, self.now));
    }

    fn ask_pin(&mut self, host: String) {
        let already =
            self.pin.as_ref().is_some_and(|p| p.host == host) || self.pins_waiting.contains(&host);
        if already {
            return;
        }
        if self.pin.is_none() {
            self.pin = Some(PinPrompt {
                host,
                typed: String::new(),
            });
        } else {
            self.pins_waiting.push_back(host);
        }
    }

    fn next_pin(&mut self) {
        self.pin = self.pins_waiting.pop_front().map(|host| PinPrompt {
            host,
            typed: String::new(),
        });
    }

    fn on_answer(&mut self, host: &str, answer: Answer) {
        match answer {
            Answer::Status(v) => self.rack.apply_status(host, &Status::from_json(&v)),
            Answer::Hosts(v) => self.rack.apply_hosts(host, &HostsEntry::list_from_json(&v)),
            Answer::Vms(v) => self.rack.apply_vms(host, VmList::from_json(&v)),
            Answer::Plan(v) => self.rack.apply_plan(host, Plan::from_json(&v)),
            Answer::Evacuate(v) => {
                let plan = Plan::from_json(&v);
                let id = plan
                    .evacuation
                    .map_or(String::new(), |id| format!(" (evacuation {id})"));
                self.rack.apply_evacuation_started(host, plan);
                self.say(format!("{host}: evacuation started{id}"));
            }
            Answer::Jobs(v) => {
                let (jobs, running) = jobs_from_json(&v);
                self.rack.apply_jobs(host, jobs, running);
            }
            Answer::Locate(v) => {
                if let Some(found) = Located::from_json(&v) {
                    self.locate
                        .answers
                        .retain(|(h, l)| h != host || l.vm != found.vm);
                    self.locate.answers.push((host.to_owned(), found));
                }
            }
            Answer::Identify => self.say(format!("{host}: identify started (locator blinking)")),
            Answer::LoggedIn => self.say(format!("{host}: logged in")),
        }
    }

    fn on_event(&mut self, host: &str, name: &str, data: &serde_json::Value) -> Vec<Command> {
        let event = Event::from_json(name, data);
        if let Some(verdict) = self.rack.apply_event(host, &event) {
            // One banner per host: a newer verdict replaces an unseen one.
            self.banners
                .retain(|b| b.host.as_deref() != Some(host) && b.host != verdict.host);
            let mut verdict = verdict;
            // The line it came on names the host when the data did not.
            verdict.host.get_or_insert_with(|| host.to_owned());
            if self.banners.is_empty() {
                self.banner_scroll = 0;
            }
            self.banners.push_back(verdict);
        }
        match event {
            // What was missed is only known by asking again.
            Event::EventsMissed(_) => vec![Command::Refresh],
            _ => Vec::new(),
        }
    }

    fn on_key(&mut self, key: Key) -> Vec<Command> {
        if self.pin.is_some() {
            return self.on_pin_key(key);
        }
        if key == Key::Interrupt {
            return vec![Command::Quit];
        }
        if !self.banners.is_empty() {
            self.on_banner_key(key);
            return Vec::new();
        }
        if self.confirm.is_some() {
            return self.on_confirm_key(key);
        }
        match self.screen.clone() {
            Screen::Rack => self.on_rack_key(key),
            Screen::Host(host) => self.on_host_key(&host, key),
            Screen::Progress(host) => self.on_progress_key(&host, key),
            Screen::Locate => self.on_locate_key(key),
        }
    }

    fn on_pin_key(&mut self, key: Key) -> Vec<Command> {
        let Some(prompt) = self.pin.as_mut() else {
            return Vec::new();
        };
        match key {
            Key::Char(c) if !c.is_control() && prompt.typed.len() + c.len_utf8() <= PIN_MAX => {
                prompt.typed.push(c);
            }
            Key::Backspace => {
                prompt.typed.pop();
            }
            Key::Enter if !prompt.typed.is_empty() => {
                let host = prompt.host.clone();
                let pin = Pin::new(std::mem::take(&mut prompt.typed));
                self.next_pin();
                return vec![Command::Login { host, pin }];
            }
            Key::Esc | Key::Interrupt => {
                let host = prompt.host.clone();
                self.next_pin();
                self.say(format!("{host}: login cancelled"));
            }
            _ => {}
        }
        Vec::new()
    }

    fn on_banner_key(&mut self, key: Key) {
        match key {
            Key::Enter | Key::Esc => {
                self.banners.pop_front();
                self.banner_scroll = 0;
            }
            Key::Up => {
                self.banner_scroll = scrolled(self.banner_scroll, -1, &self.banner_scroll_max)
            }
            Key::Down => {
                self.banner_scroll = scrolled(self.banner_scroll, 1, &self.banner_scroll_max)
            }
            // Every other key is ignored: the banner must be read, not
            // typed away by accident.
            _ => {}
        }
    }

    fn on_confirm_key(&mut self, key: Key) -> Vec<Command> {
        let Some(confirm) = self.confirm.clone() else {
            return Vec::new();
        };
        match key {
            Key::Char('y' | 'Y') => {
                self.confirm = None;
                self.say(format!("{}: evacuation asked for", confirm.host));
                self.selected_job = 0;
                self.screen = Screen::Progress(confirm.host.clone());
                vec![Command::Evacuate {
                    host: confirm.host,
                    poweroff: confirm.poweroff,
                }]
            }
            Key::Char('n' | 'N') | Key::Esc => {
                self.confirm = None;
                self.say(format!("{}: evacuation cancelled", confirm.host));
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn host_names(&self) -> Vec<String> {
        self.rack.hosts().map(|h| h.name.clone()).collect()
    }

    /// The rack screen's cursor as an index (the first host if none yet).
    pub(crate) fn selected_index(&self) -> usize {
        let names = self.host_names();
        self.selected_host
            .as_ref()
            .and_then(|s| names.iter().position(|n| n == s))
            .unwrap_or(0)
    }

    fn on_rack_key(&mut self, key: Key) -> Vec<Command> {
        let names = self.host_names();
        let at = self.selected_index();
        let last = names.len().saturating_sub(1);
        let to = match key {
            Key::Up => at.saturating_sub(1),
            Key::Down => (at + 1).min(last),
            Key::PageUp => at.saturating_sub(10),
            Key::PageDown => (at + 10).min(last),
            Key::Home => 0,
            Key::End => last,
            Key::Enter => {
                if let Some(name) = names.get(at) {
                    self.open_host(name.clone());
                }
                return Vec::new();
            }
            Key::Char('/') => {
                self.open_locate();
                return Vec::new();
            }
            Key::Char('r') => return self.refresh(),
            Key::Char('q') => return vec![Command::Quit],
            _ => return Vec::new(),
        };
        self.selected_host = names.get(to).cloned();
        Vec::new()
    }

    fn refresh(&mut self) -> Vec<Command> {
        self.say("refreshing every line".to_owned());
        vec![Command::Refresh]
    }

    fn open_host(&mut self, name: String) {
        self.selected_host = Some(name.clone());
        self.scroll = 0;
        self.screen = Screen::Host(name);
    }

    fn open_locate(&mut self) {
        self.locate = Locate::default();
        self.screen = Screen::Locate;
    }

    fn on_host_key(&mut self, host: &str, key: Key) -> Vec<Command> {
        match key {
            Key::Char('p') => {
                self.say(format!("{host}: plan asked for"));
                return vec![Command::Plan {
                    host: host.to_owned(),
                }];
            }
            Key::Char(c @ ('e' | 'E')) => {
                self.confirm = Some(Confirm {
                    host: host.to_owned(),
                    poweroff: c == 'E',
                });
            }
            Key::Char('i') => {
                self.say(format!("{host}: identify asked for"));
                return vec![Command::Identify {
                    host: host.to_owned(),
                }];
            }
            Key::Char('g') => {
                let has_run = self.rack.host(host).is_some_and(|h| h.evacuation.is_some());
                if has_run {
                    self.selected_job = 0;
                    self.screen = Screen::Progress(host.to_owned());
                } else {
                    self.say(format!("{host}: no evacuation to show"));
                }
            }
            Key::Char('/') => self.open_locate(),
            Key::Char('r') => return self.refresh(),
            Key::Up => self.scroll = scrolled(self.scroll, -1, &self.scroll_max),
            Key::Down => self.scroll = scrolled(self.scroll, 1, &self.scroll_max),
            Key::PageUp => self.scroll = scrolled(self.scroll, -10, &self.scroll_max),
            Key::PageDown => self.scroll = scrolled(self.scroll, 10, &self.scroll_max),
            Key::Home => self.scroll = 0,
            Key::Esc | Key::Char('q') => self.screen = Screen::Rack,
            _ => {}
        }
        Vec::new()
    }

    fn on_progress_key(&mut self, host: &str, key: Key) -> Vec<Command> {
        let jobs = self
            .rack
            .host(host)
            .and_then(|h| h.evacuation.as_ref())
            .map_or(0, |e| e.jobs.len());
        match key {
            Key::Up => self.selected_job = self.selected_job.saturating_sub(1),
            Key::Down => self.selected_job = (self.selected_job + 1).min(jobs.saturating_sub(1)),
            Key::Char('v') | Key::Enter => {
                let verdict = self
                    .rack
                    .host(host)
                    .and_then(|h| h.evacuation.as_ref())
                    .and_then(|e| e.verdict.clone());
                match verdict {
                    Some(mut v) => {
                        v.host.get_or_insert_with(|| host.to_owned());
                        self.banner_scroll = 0;
                        self.banners.push_front(v);
                    }
                    None => self.say(format!("{host}: no verdict yet")),
                }
            }
            Key::Char('r') => return self.refresh(),
            Key::Esc | Key::Char('q') => {
                self.scroll = 0;
                self.screen = Screen::Host(host.to_owned());
            }
            _ => {}
        }
        Vec::new()
    }

    fn on_locate_key(&mut self, key: Key) -> Vec<Command> {
        match key {
            Key::Char(c) if !c.is_control() && self.locate.query.len() < QUERY_MAX => {
                self.locate.query.push(c);
                self.locate.selected = 0;
                self.locate.asked = false;
            }
            Key::Backspace => {
                self.locate.query.pop();
                self.locate.selected = 0;
                self.locate.asked = false;
            }
            Key::Up => self.locate.selected = self.locate.selected.saturating_sub(1),
            Key::Down => self.locate.selected = self.locate.selected.saturating_add(1),
            Key::Enter => return self.locate_enter(),
            Key::Esc => self.screen = Screen::Rack,
            _ => {}
        }
        Vec::new()
    }

    /// Enter on the locate screen: open the host of the chosen match from
    /// the model; with no match, ask the agents (they also know VMs on
    /// peers we have no line to, and VMs that moved).
    fn locate_enter(&mut self) -> Vec<Command> {
        let query = self.locate.query.trim().to_owned();
        if query.is_empty() {
            return Vec::new();
        }
        let matches = self.rack.find_vms(&query);
        if !matches.is_empty() {
            let pick = matches[self.locate.selected.min(matches.len() - 1)];
            let (host, vm) = (pick.host.name.clone(), pick.vm.name.clone());
            self.say(format!("{vm} is on {host}"));
            self.open_host(host);
            return Vec::new();
        }
        self.locate.asked = true;
        vec![Command::Locate { vm: query }]
    }
}
