//! Screen 5: find a VM anywhere in the rack.

use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::{columns, row, scroll_for};
use crate::app::App;
use crate::text::{self, clean};

pub(super) const HELP: &str =
    "type a VM name  ↑↓ select  Enter: open its host / ask the agents  Esc back";

pub(super) fn render(app: &App, frame: &mut Frame, area: Rect) -> &'static str {
    let width = usize::from(area.width);
    let st = app.locate_state();
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let mut out: Vec<Line> = Vec::new();
    // The end of a long query stays visible: that is where typing happens.
    let query = clean(&st.query);
    let room = width.saturating_sub(14);
    let shown: String = if text::width(&query) > room {
        let skip = query.chars().count().saturating_sub(room.saturating_sub(1));
        format!("…{}", query.chars().skip(skip).collect::<String>())
    } else {
        query
    };
    out.push(Line::styled(format!("locate VM: {shown}_"), bold));
    out.push(Line::raw(""));

    let matches = if st.query.trim().is_empty() {
        Vec::new()
    } else {
        app.rack().find_vms(st.query.trim())
    };
    if !matches.is_empty() {
        let widths = columns(area.width, &[None, Some(12), Some(9), Some(20)], 10);
        let header = ["VM", "HOST", "STATE", "LOCATION"]
            .iter()
            .map(|s| (s.to_string(), bold))
            .collect();
        out.push(row(header, &widths));
        let visible = usize::from(area.height).saturating_sub(out.len() + 4);
        let selected = st.selected.min(matches.len() - 1);
        let first = scroll_for(selected, visible);
        for (i, m) in matches.iter().enumerate().skip(first).take(visible) {
            let mut line = row(
                vec![
                    (clean(&m.vm.name), Style::new()),
                    (clean(&m.host.name), Style::new()),
                    (m.vm.state.label().to_owned(), Style::new()),
                    (
                        m.host.location.as_deref().map_or(String::new(), clean),
                        Style::new(),
                    ),
                ],
                &widths,
            );
            if i == selected {
                line = line.style(Style::new().add_modifier(Modifier::REVERSED));
            }
            out.push(line);
        }
    } else if !st.query.trim().is_empty() {
        let t = if st.asked {
            "not in the controller's lists; asked the agents..."
        } else {
            "not in the controller's lists: Enter asks the agents"
        };
        out.push(Line::raw(text::fit(t, width)));
    }

    let answers: Vec<_> = st
        .answers
        .iter()
        .filter(|(_, l)| l.vm == st.query.trim())
        .collect();
    if !answers.is_empty() {
        out.push(Line::raw(""));
        out.push(Line::styled("the agents say:", bold));
        for (host, l) in answers {
            let t = format!("{}: {}", clean(host), clean(&l.sentence()));
            for w in text::wrap(&t, width, 4) {
                out.push(Line::raw(w));
            }
        }
    }
    out.truncate(usize::from(area.height));
    frame.render_widget(Paragraph::new(out), area);
    HELP
}
