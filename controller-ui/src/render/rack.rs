//! Screen 1: the rack at a glance, one row per host.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::{columns, health_style, line_text, row, scroll_for};
use crate::app::App;
use crate::model::{Host, HostState, LineState};
use crate::text::{self, clean};

pub(super) const HELP: &str = "↑↓ select  Enter open host  / locate VM  r refresh  q quit";

/// Rows under the table for the selected host's details (line reason,
/// health reasons): what a column could only show the start of.
const DETAIL_ROWS: u16 = 3;

pub(super) fn render(app: &App, frame: &mut Frame, area: Rect) -> &'static str {
    let [table, details] =
        Layout::vertical([Constraint::Min(2), Constraint::Length(DETAIL_ROWS)]).areas(area);
    // HOST, LINE (flexible: 27 columns at 80, room for "LINE DOWN 12s:
    // reconnecting"), STATE, HEALTH, VMS, CPU (%), MEM GiB (free/total),
    // and at 100 columns and more, LOCATION.
    let wide = area.width >= 100;
    let mut fixed = vec![Some(12), None, Some(12), Some(8), Some(3), Some(3), Some(9)];
    if wide {
        fixed.push(Some(16));
    }
    let widths = columns(area.width, &fixed, 10);

    let mut header: Vec<(String, Style)> =
        ["HOST", "LINE", "STATE", "HEALTH", "VMS", "CPU", "MEM GiB"]
            .iter()
            .map(|h| (h.to_string(), Style::new().add_modifier(Modifier::BOLD)))
            .collect();
    if wide {
        header.push(("LOCATION".into(), Style::new().add_modifier(Modifier::BOLD)));
    }
    let mut lines = vec![row(header, &widths)];

    let hosts: Vec<&Host> = app.rack().hosts().collect();
    if hosts.is_empty() {
        lines.push(Line::raw("no hosts yet: waiting for the lines to answer"));
    }
    let selected = app.selected_index();
    let visible = usize::from(table.height.saturating_sub(1));
    let first = scroll_for(selected, visible);
    for (i, h) in hosts.iter().enumerate().skip(first).take(visible) {
        let mut line = row(host_cells(app, h, wide), &widths);
        if i == selected {
            line = line.style(Style::new().add_modifier(Modifier::REVERSED));
        }
        lines.push(line);
    }
    frame.render_widget(Paragraph::new(lines), table);

    if let Some(h) = hosts.get(selected) {
        render_details(app, h, frame, details);
    }
    HELP
}

fn host_cells(app: &App, h: &Host, wide: bool) -> Vec<(String, Style)> {
    let plain = Style::new();
    let (line, line_style) = line_text(&h.line, app.now());
    let state = match &h.state {
        HostState::Unreachable(_) => ("unreachable".to_owned(), super::alarm()),
        s => (s.label(), plain),
    };
    let mut cells = vec![
        (clean(&h.name), plain),
        (line, line_style),
        state,
        (h.health.label().to_owned(), health_style(h.health)),
        (h.running_vms().map_or("-".into(), |n| n.to_string()), plain),
        (h.cpu_pct.map_or("-".into(), |c| format!("{c:.0}")), plain),
        (text::gib_pair(h.mem_free_mib, h.mem_total_mib), plain),
    ];
    if wide {
        cells.push((h.location.as_deref().map_or(String::new(), clean), plain));
    }
    cells
}

/// The selected host's full line reason and health reasons, wrapped.
fn render_details(app: &App, h: &Host, frame: &mut Frame, area: Rect) {
    let width = usize::from(area.width);
    let mut out: Vec<Line> = Vec::new();
    let mut add = |s: String, style: Style| {
        for l in text::wrap(&s, width, 2) {
            out.push(Line::styled(l, style));
        }
    };
    let name = clean(&h.name);
    let place = h
        .location
        .as_deref()
        .map_or("location not known yet".to_owned(), clean);
    add(format!("{name}: {place}"), Style::new());
    if let LineState::Dropped { .. } = h.line {
        let (t, style) = line_text(&h.line, app.now());
        add(t, style);
    }
    if let HostState::Unreachable(why) = &h.state {
        add(format!("unreachable: {}", clean(why)), super::alarm());
    }
    for r in &h.health_reasons {
        add(format!("health: {}", clean(r)), health_style(h.health));
    }
    out.truncate(usize::from(area.height));
    frame.render_widget(Paragraph::new(out), area);
}
