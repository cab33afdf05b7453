//! Screen 2: one host: its figures, its VMs with where the plan moves
//! each, and what cannot be placed and why.

use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::{alarm, columns, health_style, line_text, row};
use crate::app::App;
use crate::model::{Host, PlanFor};
use crate::text::{self, clean};

pub(super) const HELP: &str =
    "p plan  e evacuate  E evacuate+power off  i identify  g progress  Esc back";

pub(super) fn render(app: &App, name: &str, frame: &mut Frame, area: Rect) -> &'static str {
    let Some(h) = app.rack().host(name) else {
        let msg = format!("no host named {} in the rack", clean(name));
        frame.render_widget(
            Paragraph::new(text::fit(&msg, usize::from(area.width))),
            area,
        );
        return HELP;
    };
    let lines = lines(app, h, usize::from(area.width));
    // Scrolled by Up/Down; kept so the last line can reach the bottom, no
    // further.
    let max = lines.len().saturating_sub(usize::from(area.height));
    app.scroll_max.set(u16::try_from(max).unwrap_or(u16::MAX));
    let scroll = usize::from(app.scroll).min(max);
    let shown: Vec<Line> = lines.into_iter().skip(scroll).collect();
    frame.render_widget(Paragraph::new(shown), area);
    HELP
}

/// What the controller knows against a planned destination.
fn caution() -> Style {
    Style::new().fg(Color::Yellow)
}

fn lines(app: &App, h: &Host, width: usize) -> Vec<Line<'static>> {
    let mut out: Vec<Line<'static>> = Vec::new();
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let wrapped = |out: &mut Vec<Line<'static>>, s: String, style: Style| {
        for l in text::wrap(&s, width, 4) {
            out.push(Line::styled(l, style));
        }
    };

    let place = h.location.as_deref().map(clean).unwrap_or_default();
    wrapped(&mut out, format!("{}  {place}", clean(&h.name)), bold);
    let (line, line_style) = line_text(&h.line, app.now());
    wrapped(&mut out, format!("line: {line}"), line_style);
    wrapped(
        &mut out,
        format!("state: {}   health: {}", h.state.label(), h.health.label()),
        health_style(h.health),
    );
    for r in &h.health_reasons {
        wrapped(&mut out, format!("  {}", clean(r)), health_style(h.health));
    }
    wrapped(
        &mut out,
        format!(
            "CPU: {}   memory: {} GiB free   VMs running: {}",
            h.cpu_pct.map_or("-".into(), |c| format!("{c:.0}%")),
            text::gib_pair(h.mem_free_mib, h.mem_total_mib),
            h.running_vms().map_or("-".into(), |n| n.to_string()),
        ),
        Style::new(),
    );
    for n in &h.notes {
        wrapped(
            &mut out,
            format!("note: {}", clean(n)),
            Style::new().fg(Color::Yellow),
        );
    }
    if let Some(e) = &h.evacuation {
        let what = match &e.verdict {
            Some(v) if v.safe => "ended: SAFE".to_owned(),
            Some(_) => "ended: NOT SAFE".to_owned(),
            None => {
                let done = e.jobs.iter().filter(|j| j.phase.is_over()).count();
                format!("{done} of {} VMs finished", e.jobs.len())
            }
        };
        let id = e.id.map_or(String::new(), |id| format!(" {id}"));
        let style = match &e.verdict {
            Some(v) if !v.safe => alarm(),
            _ => bold,
        };
        wrapped(
            &mut out,
            format!("evacuation{id}: {what} (g: progress)"),
            style,
        );
    }
    out.push(Line::raw(""));

    // NAME (flexible), STATE, VCPUS, MIB, PLAN.
    let widths = columns(
        width as u16,
        &[None, Some(9), Some(5), Some(6), Some(20)],
        8,
    );
    let header = ["NAME", "STATE", "VCPUS", "MiB", "PLAN"]
        .iter()
        .map(|s| (s.to_string(), bold))
        .collect();
    out.push(row(header, &widths));
    if h.vms.is_empty() {
        out.push(Line::raw("no VMs known (r refreshes)"));
    }
    if h.vms_stale {
        out.push(Line::styled(
            "the agent's last known list: libvirt is not answering",
            alarm(),
        ));
    }
    for vm in &h.vms {
        let plan = match h.plan.as_ref().map(|p| p.for_vm(&vm.name)) {
            Some(PlanFor::MovesTo(dest)) => match app.rack().caution(dest) {
                Some(c) => (format!("→ {} ({c})", clean(dest)), caution()),
                None => (format!("→ {}", clean(dest)), Style::new()),
            },
            Some(PlanFor::CannotPlace(_)) => ("cannot place".to_owned(), alarm()),
            Some(PlanFor::NotInPlan) => ("stays".to_owned(), Style::new()),
            None => (String::new(), Style::new()),
        };
        out.push(row(
            vec![
                (clean(&vm.name), Style::new()),
                (vm.state.label().to_owned(), Style::new()),
                (vm.vcpus.map_or("-".into(), |n| n.to_string()), Style::new()),
                (
                    vm.mem_mib.map_or("-".into(), |n| n.to_string()),
                    Style::new(),
                ),
                plan,
            ],
            &widths,
        ));
    }
    out.push(Line::raw(""));

    match &h.plan {
        None => out.push(Line::raw("no plan yet: p asks for a dry run")),
        Some(p) => {
            wrapped(
                &mut out,
                format!(
                    "plan: {} to move, {} cannot be placed",
                    p.moves.len(),
                    p.unplaceable.len()
                ),
                bold,
            );
            for u in &p.unplaceable {
                let what = if u.unmovable {
                    "cannot move"
                } else {
                    "cannot place"
                };
                wrapped(
                    &mut out,
                    format!("  {what} {}: {}", clean(&u.vm), clean(&u.reason)),
                    alarm(),
                );
            }
            let mut dests: Vec<&str> = p.moves.iter().map(|m| m.dest.as_str()).collect();
            dests.sort_unstable();
            dests.dedup();
            for d in dests {
                if let Some(c) = app.rack().caution(d) {
                    wrapped(
                        &mut out,
                        format!(
                            "  {} is {c}: a move there may be refused; the agent then tries another peer",
                            clean(d)
                        ),
                        caution(),
                    );
                }
            }
            for r in &p.peer_reasons {
                wrapped(
                    &mut out,
                    format!("  peer {}: {}", clean(&r.host), clean(&r.reason)),
                    Style::new(),
                );
            }
        }
    }
    out
}
