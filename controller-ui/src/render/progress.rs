//! Screen 3: an evacuation's progress, one gauge per VM.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols;
use ratatui::text::Line;
use ratatui::widgets::{LineGauge, Paragraph};
use ratatui::Frame;

use super::{alarm, line_text, scroll_for};
use crate::app::App;
use crate::model::{Evacuation, Host, Job, LineState, Phase};
use crate::text::{self, clean};

pub(super) const HELP: &str = "↑↓ select VM  v verdict  r refresh  Esc back";

const HEAD_ROWS: u16 = 2;
const FOOT_ROWS: u16 = 4;
const VM_COLS: u16 = 14;
const DEST_COLS: u16 = 8;
const RIGHT_COLS: u16 = 18;

pub(super) fn render(app: &App, name: &str, frame: &mut Frame, area: Rect) -> &'static str {
    let width = usize::from(area.width);
    let Some((h, e)) = app
        .rack()
        .host(name)
        .and_then(|h| h.evacuation.as_ref().map(|e| (h, e)))
    else {
        let msg = format!("{}: waiting for the evacuation to start", clean(name));
        frame.render_widget(Paragraph::new(text::fit(&msg, width)), area);
        return HELP;
    };
    let [head, rows, foot] = Layout::vertical([
        Constraint::Length(HEAD_ROWS),
        Constraint::Min(1),
        Constraint::Length(FOOT_ROWS),
    ])
    .areas(area);

    frame.render_widget(Paragraph::new(header(app, h, e, width)), head);

    let visible = usize::from(rows.height);
    let selected = app.selected_job.min(e.jobs.len().saturating_sub(1));
    let first = scroll_for(selected, visible);
    for (i, job) in e.jobs.iter().enumerate().skip(first).take(visible) {
        let y = rows.y + (i - first) as u16;
        let r = Rect::new(rows.x, y, rows.width, 1);
        job_row(job, i == selected, frame, r);
    }
    if e.jobs.is_empty() {
        frame.render_widget(Paragraph::new("no VM to move"), rows);
    }

    frame.render_widget(Paragraph::new(footer(e, selected, width)), foot);
    HELP
}

fn header(app: &App, h: &Host, e: &Evacuation, width: usize) -> Vec<Line<'static>> {
    let count = |f: fn(&Phase) -> bool| e.jobs.iter().filter(|j| f(&j.phase)).count();
    let done = count(|p| *p == Phase::Done);
    let failed = count(|p| matches!(p, Phase::Failed(_) | Phase::Aborted(_)));
    let running = count(|p| *p == Phase::Running);
    let id = e.id.map_or(String::new(), |id| format!(" {id}"));
    let title = format!(
        "{} · evacuation{id} · {done} of {} done, {running} running, {failed} failed",
        clean(&h.name),
        e.jobs.len()
    );
    let mut lines = vec![Line::styled(
        text::fit(&title, width),
        Style::new().add_modifier(Modifier::BOLD),
    )];
    // A dropped line freezes the figures: say so where the figures are.
    if let LineState::Dropped { .. } = h.line {
        let (t, style) = line_text(&h.line, app.now());
        lines.push(Line::styled(
            text::fit(&format!("{t}; figures are from before"), width),
            style,
        ));
    } else if let Some(v) = &e.verdict {
        let (t, style) = if v.safe {
            (
                "ended: SAFE TO POWER OFF (v shows it)",
                Style::new().fg(Color::Green),
            )
        } else {
            ("ended: NOT SAFE TO POWER OFF (v shows why)", alarm())
        };
        lines.push(Line::styled(text::fit(t, width), style));
    }
    lines
}

/// `VM  → DEST  ━━━━━━───── 41% ETA 2s  57 MiB 35 MiB/s`, or for a job
/// that failed, its reason in place of the gauge.
fn job_row(job: &Job, selected: bool, frame: &mut Frame, area: Rect) {
    let [vm, dest, gauge, right] = Layout::horizontal([
        Constraint::Length(VM_COLS),
        Constraint::Length(DEST_COLS),
        Constraint::Min(10),
        Constraint::Length(RIGHT_COLS),
    ])
    .spacing(1)
    .areas(area);
    let mark = if selected {
        Style::new().add_modifier(Modifier::REVERSED)
    } else {
        Style::new()
    };
    let dest_name = job.dest.as_deref().map_or("?".to_owned(), clean);
    frame.render_widget(
        Paragraph::new(text::cell(&clean(&job.vm), usize::from(vm.width))).style(mark),
        vm,
    );
    frame.render_widget(
        Paragraph::new(text::fit(
            &format!("→ {dest_name}"),
            usize::from(dest.width),
        )),
        dest,
    );

    match &job.phase {
        Phase::Failed(why) | Phase::Aborted(why) => {
            let span = Rect {
                width: gauge.width + 1 + right.width,
                ..gauge
            };
            let t = format!("{}: {}", job.phase.label(), clean(why));
            frame.render_widget(
                Paragraph::new(text::fit(&t, usize::from(span.width))).style(alarm()),
                span,
            );
        }
        phase => {
            // Whole percent, floored as the agent does: 99.9 is not done.
            let pct = (job.ratio() * 100.0).floor() as u32;
            let label = match phase {
                Phase::Queued => "queued".to_owned(),
                Phase::Done => "done".to_owned(),
                _ => match job.eta_s {
                    Some(eta) => format!("{pct:>3}% ETA {}", text::duration(eta)),
                    None => format!("{pct:>3}% ETA ?"),
                },
            };
            let color = if *phase == Phase::Done {
                Color::Green
            } else {
                Color::Cyan
            };
            let g = LineGauge::default()
                .ratio(job.ratio())
                .label(text::fit(&label, usize::from(gauge.width)))
                .filled_symbol(symbols::line::THICK_HORIZONTAL)
                .filled_style(Style::new().fg(color))
                .unfilled_style(Style::new().fg(Color::DarkGray));
            frame.render_widget(g, gauge);
            frame.render_widget(
                Paragraph::new(text::fit(&right_text(job), usize::from(right.width))),
                right,
            );
        }
    }
}

/// What is left and how fast, or for a finished job how long it took.
fn right_text(job: &Job) -> String {
    match job.phase {
        Phase::Done => {
            let secs = job.seconds.map_or(String::new(), |s| format!("{s:.1}s"));
            let down = job
                .downtime_ms
                .map_or(String::new(), |d| format!(" down {d}ms"));
            format!("{secs}{down}")
        }
        Phase::Queued => String::new(),
        _ => {
            let left = job.remaining_mib.map_or("size ?".to_owned(), text::mib);
            let rate = job
                .rate_mib_s
                .map_or(String::new(), |r| format!(" {r:.0}MiB/s"));
            format!("{left}{rate}")
        }
    }
}

/// The selected VM's note or error in full, then what the plan could not
/// place.
fn footer(e: &Evacuation, selected: usize, width: usize) -> Vec<Line<'static>> {
    let mut out = Vec::new();
    if let Some(job) = e.jobs.get(selected) {
        let about = match (&job.phase, &job.note) {
            (Phase::Failed(why) | Phase::Aborted(why), _) => Some(format!("{}: {why}", job.vm)),
            (_, Some(note)) => Some(format!("{}: {note}", job.vm)),
            _ => None,
        };
        if let Some(about) = about {
            for l in text::wrap(&clean(&about), width, 2).into_iter().take(2) {
                out.push(Line::raw(l));
            }
        }
    }
    if !e.plan.unplaceable.is_empty() {
        let names: Vec<String> = e.plan.unplaceable.iter().map(|u| clean(&u.vm)).collect();
        let t = format!("cannot place, staying here: {}", names.join(", "));
        for l in text::wrap(&t, width, 2).into_iter().take(2) {
            out.push(Line::styled(l, alarm()));
        }
    }
    out
}
