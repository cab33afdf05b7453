//! Where a migration's time went: the moments of one migration, in
//! seconds since the agent accepted it (pure; the loop in
//! [`super::run`] marks them as it sees them).
//!
//! Seen from the source agent, so each moment is when the agent noticed,
//! at most one sampling interval after it happened.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The moments, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// The migration's thread began (the evacuation started the job).
    Accepted,
    /// The agent's own preparation ended (nwfilters on the destination,
    /// certificates here) and libvirt was asked to migrate.
    Prepared,
    /// libvirt on the destination has the VM (its QEMU started, waiting
    /// for the stream).
    DestStarted,
    /// The first guest memory crossed the wire.
    FirstByte,
    /// The guest was paused here for the final copy.
    Switchover,
    /// libvirt's migrate call returned (destination resumed, source
    /// QEMU stopped).
    Ended,
    /// The destination's announcement of the VM (QEMU's RARP) reached
    /// this host; of the last NIC, if several. Heard by another thread, it
    /// is placed by its time: QEMU announces as the stream ends, so it
    /// usually comes right after `Switchover`, before `Ended`.
    Announced,
    /// The agent reported the migration done.
    Done,
}

impl Step {
    /// Its name on an 80-column line.
    pub fn short(self) -> &'static str {
        match self {
            Step::Accepted => "acc",
            Step::Prepared => "prep",
            Step::DestStarted => "dest",
            Step::FirstByte => "data",
            Step::Switchover => "pause",
            Step::Announced => "ann",
            Step::Ended => "end",
            Step::Done => "done",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Accepted => "accepted",
            Step::Prepared => "prepared",
            Step::DestStarted => "dest_started",
            Step::FirstByte => "first_byte",
            Step::Switchover => "switchover",
            Step::Ended => "ended",
            Step::Announced => "announced",
            Step::Done => "done",
        }
    }
}

/// One moment: `at_s` seconds after [`Step::Accepted`], to the millisecond.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Mark {
    pub step: Step,
    pub at_s: f64,
}

/// The moments seen, in order; a step not seen (a transfer too short to
/// sample, an offline move with no stream) is absent.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timeline(Vec<Mark>);

impl Timeline {
    /// Records `step` at `at` (since the job was accepted). A step is kept
    /// the first time it is seen; a step earlier than one already marked
    /// came too late to place and is dropped, so the list stays ordered.
    pub fn mark(&mut self, step: Step, at: Duration) {
        if self.0.last().is_some_and(|m| m.step >= step) {
            return;
        }
        let at_s = (at.as_secs_f64() * 1000.0).round() / 1000.0;
        let at_s = self.0.last().map_or(at_s, |m| at_s.max(m.at_s));
        self.0.push(Mark { step, at_s });
    }

    /// Records `step` at `at`, placed among the marks by its time, not
    /// its order: for a moment heard apart from the loop (the
    /// announcement), which may come before or after others. Kept once.
    pub fn insert(&mut self, step: Step, at: Duration) {
        if self.at(step).is_some() {
            return;
        }
        let at_s = (at.as_secs_f64() * 1000.0).round() / 1000.0;
        let i = self
            .0
            .iter()
            .position(|m| m.at_s > at_s)
            .unwrap_or(self.0.len());
        self.0.insert(i, Mark { step, at_s });
    }

    pub fn marks(&self) -> &[Mark] {
        &self.0
    }

    pub fn at(&self, step: Step) -> Option<f64> {
        self.0.iter().find(|m| m.step == step).map(|m| m.at_s)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// For a terminal line (`jobs`): the steps after `accepted` (always
    /// 0) with short names, `prep 0.1 dest 0.3 data 1.3 pause 2.1 end 4.1
    /// done 4.1`; seconds.
    pub fn compact(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .filter(|m| m.step != Step::Accepted)
            .map(|m| format!("{} {:.1}", m.step.short(), m.at_s))
            .collect();
        if parts.is_empty() {
            "-".into()
        } else {
            parts.join(" ")
        }
    }

    /// For people: `accepted 0.0, prepared 0.1, first_byte 3.4, ... (s)`.
    pub fn text(&self) -> String {
        if self.0.is_empty() {
            return "-".into();
        }
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|m| format!("{} {:.1}", m.step.as_str(), m.at_s))
            .collect();
        format!("{} (s)", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn marks_are_kept_once_and_in_order() {
        let mut t = Timeline::default();
        t.mark(Step::Accepted, ms(0));
        t.mark(Step::Prepared, ms(120));
        t.mark(Step::Prepared, ms(900));
        t.mark(Step::FirstByte, ms(3_400));
        // Seen after the first byte: too late to place, dropped.
        t.mark(Step::DestStarted, ms(3_500));
        t.mark(Step::Switchover, ms(4_949));
        t.mark(Step::Ended, ms(7_900));
        t.mark(Step::Done, ms(7_950));
        let steps: Vec<Step> = t.marks().iter().map(|m| m.step).collect();
        assert_eq!(
            steps,
            [
                Step::Accepted,
                Step::Prepared,
                Step::FirstByte,
                Step::Switchover,
                Step::Ended,
                Step::Done
            ]
        );
        assert_eq!(t.at(Step::Prepared), Some(0.12));
        assert_eq!(t.compact(), "prep 0.1 data 3.4 pause 4.9 end 7.9 done 8.0");
        assert_eq!(Timeline::default().compact(), "-");
        assert_eq!(t.at(Step::DestStarted), None);
        assert_eq!(
            t.text(),
            "accepted 0.0, prepared 0.1, first_byte 3.4, switchover 4.9, ended 7.9, done 8.0 (s)"
        );
    }

    #[test]
    fn the_announcement_is_placed_by_its_time() {
        let mut t = Timeline::default();
        t.mark(Step::Accepted, ms(0));
        t.mark(Step::Switchover, ms(2_000));
        t.mark(Step::Ended, ms(2_300));
        t.insert(Step::Announced, ms(2_180));
        t.insert(Step::Announced, ms(2_900));
        t.mark(Step::Done, ms(2_400));
        let steps: Vec<Step> = t.marks().iter().map(|m| m.step).collect();
        assert_eq!(
            steps,
            [
                Step::Accepted,
                Step::Switchover,
                Step::Announced,
                Step::Ended,
                Step::Done
            ]
        );
        assert_eq!(t.at(Step::Announced), Some(2.18));
        // Heard after the end: after it.
        let mut late = Timeline::default();
        late.mark(Step::Ended, ms(1_000));
        late.insert(Step::Announced, ms(1_050));
        late.mark(Step::Done, ms(1_100));
        assert_eq!(late.text(), "ended 1.0, announced 1.1, done 1.1 (s)");
    }

    #[test]
    fn time_never_runs_backwards_in_a_timeline() {
        let mut t = Timeline::default();
        t.mark(Step::Accepted, ms(500));
        t.mark(Step::Prepared, ms(100));
        assert_eq!(t.at(Step::Prepared), Some(0.5));
    }

    #[test]
    fn json_is_an_ordered_list_of_named_steps() {
        let mut t = Timeline::default();
        t.mark(Step::Accepted, ms(0));
        t.mark(Step::DestStarted, ms(1_800));
        assert_eq!(
            serde_json::to_value(&t).unwrap_or_default(),
            serde_json::json!([
                {"step": "accepted", "at_s": 0.0},
                {"step": "dest_started", "at_s": 1.8}
            ])
        );
        assert_eq!(Timeline::default().text(), "-");
    }
}
