//! Boxes drawn over a screen: the evacuation confirmation and the PIN
//! prompt.

use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::Frame;

use crate::app::{App, Confirm, PinPrompt};
use crate::model::LineState;
use crate::text::{self, clean};

pub(super) const CONFIRM_HELP: &str = "y: yes, evacuate  n or Esc: no";
pub(super) const PIN_HELP: &str = "type the PIN (not shown)  Enter: log in  Esc: cancel";

/// A box of at most `w` x `h` centred in `area`, never larger than it.
fn centred(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

fn boxed(frame: &mut Frame, area: Rect, title: String, lines: Vec<Line<'static>>) {
    let block = Block::default().borders(Borders::ALL).title(Line::styled(
        title,
        Style::new().add_modifier(Modifier::BOLD),
    ));
    let inner = block.inner(area);
    frame.render_widget(Clear, area);
    frame.render_widget(block, area);
    frame.render_widget(Paragraph::new(lines), inner);
}

pub(super) fn confirm(app: &App, c: &Confirm, frame: &mut Frame, area: Rect) {
    let area = centred(area, 64, 9);
    let width = usize::from(area.width.saturating_sub(2));
    let host = clean(&c.host);
    let plan = app.rack().host(&c.host).and_then(|h| h.plan.as_ref());
    let mut what = format!("Every VM on {host} moves to its peers; {host} goes into maintenance.");
    if let Some(p) = plan {
        what.push_str(&format!(
            " Last plan: {} to move, {} cannot be placed.",
            p.moves.len(),
            p.unplaceable.len()
        ));
    }
    // Asking is still allowed (the binary may be about to reconnect), but
    // the person should know the request has no way through yet.
    let line_down = app
        .rack()
        .host(&c.host)
        .is_some_and(|h| matches!(h.line, LineState::Dropped { .. }));
    if line_down {
        what.push_str(" Its LINE IS DOWN: the request waits for it.");
    }
    if c.poweroff {
        what.push_str(&format!(" Then, only if SAFE, {host} switches itself off."));
    }
    let mut lines: Vec<Line<'static>> = text::wrap(&what, width, 0)
        .into_iter()
        .map(Line::raw)
        .collect();
    lines.push(Line::raw(""));
    lines.push(Line::styled(
        text::fit("y: evacuate   n: cancel", width),
        Style::new().add_modifier(Modifier::BOLD),
    ));
    let title = if c.poweroff {
        format!(" Evacuate {host} and power it off? ")
    } else {
        format!(" Evacuate {host}? ")
    };
    boxed(frame, area, text::fit(&title, width), lines);
}

/// The PIN prompt shows one `*` per character typed and never the
/// characters themselves.
pub(super) fn pin(p: &PinPrompt, frame: &mut Frame, area: Rect) {
    let area = centred(area, 44, 5);
    let width = usize::from(area.width.saturating_sub(2));
    let stars = "*".repeat(p.len().min(width.saturating_sub(6)));
    let lines = vec![
        Line::raw(format!("PIN: {stars}")),
        Line::raw(""),
        Line::raw(text::fit("Enter: log in   Esc: cancel", width)),
    ];
    let title = format!(" {} asks for its PIN ", clean(&p.host));
    boxed(frame, area, text::fit(&title, width), lines);
}
