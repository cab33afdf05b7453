//! Screen 4: the verdict, full screen.
//!
//! The phrase "SAFE TO POWER OFF" is written only here, from the verdict's
//! checked boolean; every name and reason on it is `clean`ed, which spells
//! that phrase's space as `\x20`, so no data can print a verdict.

use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, BorderType, Borders, Paragraph};
use ratatui::Frame;

use crate::app::App;
use crate::model::Verdict;
use crate::text::{self, clean};

pub(super) const HELP: &str = "Enter or Esc: dismiss  ↑↓ scroll the reasons";

pub(super) fn render(app: &App, v: &Verdict, frame: &mut Frame, area: Rect) {
    let (colour, title) = if v.safe {
        (Color::Green, "*** SAFE TO POWER OFF ***")
    } else {
        (Color::Red, "*** NOT SAFE TO POWER OFF ***")
    };
    let style = Style::new().fg(Color::White).bg(colour);
    let block = Block::default()
        .borders(Borders::ALL)
        .border_type(BorderType::Thick)
        .style(style);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = usize::from(inner.width);

    let host = v.host.as_deref().map_or("?".to_owned(), clean);
    let id = v
        .evacuation
        .map_or(String::new(), |id| format!(" · evacuation {id}"));
    let bold = style.add_modifier(Modifier::BOLD);
    let summary = if v.safe {
        format!("no VM left running; {} moved", v.moved)
    } else {
        format!("{} moved; do not switch this host off:", v.moved)
    };
    let mut head = vec![
        Line::raw(""),
        Line::styled(text::fit(title, width), bold),
        Line::styled(text::fit(&format!("host {host}{id}"), width), bold),
        Line::raw(text::fit(&summary, width)),
        Line::raw(""),
    ];
    let mut body: Vec<Line> = Vec::new();
    if !v.safe {
        for r in &v.reasons {
            for l in text::wrap(&format!("- {}", clean(r)), width.saturating_sub(2), 4) {
                body.push(Line::raw(format!("  {l}")));
            }
        }
        body.push(Line::raw(""));
        let maint = "this host stays in maintenance: 'maintenance off' takes it out";
        for l in text::wrap(maint, width.saturating_sub(2), 2) {
            body.push(Line::raw(format!("  {l}")));
        }
    }
    let more = app.banners.len().saturating_sub(1);
    if more > 0 {
        body.push(Line::raw(""));
        body.push(Line::styled(
            text::fit(&format!("{more} more verdict(s) after this one"), width),
            bold,
        ));
    }

    // The title never scrolls away; the reasons scroll under it, left
    // aligned so a wrapped reason reads as one.
    let room = usize::from(inner.height).saturating_sub(head.len());
    let max = body.len().saturating_sub(room);
    app.banner_scroll_max
        .set(u16::try_from(max).unwrap_or(u16::MAX));
    let skip = usize::from(app.banner_scroll).min(max);
    if skip > 0 || body.len() > room + skip {
        let last = (skip + room).min(body.len());
        let note = format!("(lines {}-{last} of {}; ↑↓ scroll)", skip + 1, body.len());
        head[4] = Line::raw(text::fit(&note, width));
    }
    let [top, rest] =
        Layout::vertical([Constraint::Length(head.len() as u16), Constraint::Min(0)]).areas(inner);
    frame.render_widget(
        Paragraph::new(head)
            .alignment(Alignment::Center)
            .style(style),
        top,
    );
    let body: Vec<Line> = body.into_iter().skip(skip).collect();
    frame.render_widget(Paragraph::new(body).style(style), rest);
}
