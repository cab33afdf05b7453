//! Drawing: one module per screen, plus the frame around them (title,
//! message line, help line) and the overlays (confirmation, PIN, verdict).
//!
//! Every text from data is `clean`ed and then cut with `text::fit` or
//! `text::wrap` to the columns it has, so nothing is clipped mid-word by
//! the terminal where a whole word could be kept, at 80x24 and above.

mod host;
mod locate;
mod overlay;
mod progress;
mod rack;
mod verdict;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};
use ratatui::Frame;

use crate::app::{App, Screen};
use crate::input::Millis;
use crate::model::{Health, LineState};
use crate::text::{self, clean};

pub(crate) fn render(app: &App, frame: &mut Frame) {
    let area = frame.area();
    let [title, body, message, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);

    // A verdict takes the whole screen above the help line: nothing else
    // may distract from it, and the help line says how to dismiss it.
    if let Some(v) = app.banner() {
        let full = Rect {
            height: area.height.saturating_sub(1),
            ..area
        };
        verdict::render(app, v, frame, full);
        help_line(frame, help, verdict::HELP);
    } else {
        title_bar(app, frame, title);
        let keys = match app.screen() {
            Screen::Rack => rack::render(app, frame, body),
            Screen::Host(h) => host::render(app, h, frame, body),
            Screen::Progress(h) => progress::render(app, h, frame, body),
            Screen::Locate => locate::render(app, frame, body),
        };
        message_line(app, frame, message);
        let keys = if app.confirming().is_some() {
            overlay::CONFIRM_HELP
        } else {
            keys
        };
        help_line(frame, help, keys);
        if let Some(c) = app.confirming() {
            overlay::confirm(app, c, frame, body);
        }
    }
    // The PIN prompt is over everything: the agent is waiting for it.
    if let Some(p) = app.pin_prompt() {
        overlay::pin(p, frame, area);
        help_line(frame, help, overlay::PIN_HELP);
    }
}

fn title_bar(app: &App, frame: &mut Frame, area: Rect) {
    let rack = app.rack();
    let down = rack
        .hosts()
        .filter(|h| matches!(h.line, LineState::Dropped { .. }))
        .count();
    let evacuating = rack
        .hosts()
        .filter(|h| h.evacuation.as_ref().is_some_and(|e| !e.is_over()))
        .count();
    let mut spans = vec![Span::styled(
        format!(" rackside · {} hosts", rack.len()),
        Style::new().add_modifier(Modifier::BOLD),
    )];
    if down > 0 {
        spans.push(Span::styled(
            format!(" · {down} LINE{} DOWN", if down == 1 { "" } else { "S" }),
            alarm(),
        ));
    }
    if evacuating > 0 {
        spans.push(Span::raw(format!(" · {evacuating} evacuating")));
    }
    let line = Line::from(spans).style(Style::new().add_modifier(Modifier::REVERSED));
    frame.render_widget(Paragraph::new(line), area);
}

fn message_line(app: &App, frame: &mut Frame, area: Rect) {
    if let Some(m) = app.message() {
        let m = text::fit(&clean(m), usize::from(area.width));
        frame.render_widget(
            Paragraph::new(m).style(Style::new().fg(Color::Yellow)),
            area,
        );
    }
}

fn help_line(frame: &mut Frame, area: Rect, keys: &str) {
    let keys = text::fit(keys, usize::from(area.width));
    // Drawn again over a screen's own help when a prompt opens.
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(keys).style(Style::new().add_modifier(Modifier::REVERSED)),
        area,
    );
}

/// Red and bold: a dropped line, a failure, NOT SAFE.
pub(crate) fn alarm() -> Style {
    Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
}

pub(crate) fn health_style(h: Health) -> Style {
    match h {
        Health::Ok => Style::new().fg(Color::Green),
        Health::Degraded => Style::new().fg(Color::Yellow),
        Health::Faulty => alarm(),
        Health::Unknown => Style::new().fg(Color::DarkGray),
    }
}

/// A line's state in a few words: `up`, `connecting 3s`,
/// `LINE DOWN 12s: reconnecting`.
pub(crate) fn line_text(line: &LineState, now: Millis) -> (String, Style) {
    match line {
        LineState::NoLine => ("no line".into(), Style::new().fg(Color::DarkGray)),
        LineState::Up { .. } => ("up".into(), Style::new().fg(Color::Green)),
        LineState::Connecting { since } => (
            format!("connecting {}", text::duration(now.secs_since(*since))),
            Style::new().fg(Color::Yellow),
        ),
        LineState::Dropped { since, reason } => (
            format!(
                "LINE DOWN {}: {}",
                text::duration(now.secs_since(*since)),
                clean(reason)
            ),
            alarm(),
        ),
    }
}

/// Widths for columns separated by one space: fixed ones as given, the
/// flexible one (`None`) takes what is left, at least `min_flex`. Computed
/// here rather than by a layout solver so the tests can count on them.
pub(crate) fn columns(total: u16, fixed: &[Option<u16>], min_flex: u16) -> Vec<usize> {
    let gaps = fixed.len().saturating_sub(1) as u16;
    let used: u16 = fixed.iter().flatten().sum::<u16>() + gaps;
    let flex = total.saturating_sub(used).max(min_flex);
    fixed
        .iter()
        .map(|w| usize::from(w.unwrap_or(flex)))
        .collect()
}

/// A row of cells padded or cut to their widths, one space apart.
pub(crate) fn row(cells: Vec<(String, Style)>, widths: &[usize]) -> Line<'static> {
    let mut spans = Vec::with_capacity(cells.len() * 2);
    for (i, ((text, style), w)) in cells.into_iter().zip(widths).enumerate() {
        if i > 0 {
            spans.push(Span::raw(" "));
        }
        spans.push(Span::styled(text::cell(&text, *w), style));
    }
    Line::from(spans)
}

/// The first visible row so that `selected` is on screen.
pub(crate) fn scroll_for(selected: usize, visible: usize) -> usize {
    if visible == 0 {
        return selected;
    }
    selected.saturating_sub(visible - 1)
}
