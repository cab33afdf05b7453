//! The journal: every run is written down before it starts and at each
//! change of a job's phase, so a restarted agent knows what it was doing.
//! JSON lines, appended and fsynced.
//!
//! It loses nothing. The file is read as bytes and every line is parsed on
//! its own:
//! - a torn last line (no newline: a power cut in the middle of an append)
//!   is skipped, and its bytes are kept in a `journal.jsonl.torn-<ts>` side
//!   file; the state before it is recovered. Only the last phase change of
//!   one run can be in it, and recovery checks every unfinished job against
//!   libvirt anyway.
//! - any other line that does not parse (invalid UTF-8, not JSON, a record
//!   this agent does not know), or a file that cannot be read at all, is
//!   damage: the whole file is moved aside to `journal.jsonl.damaged-<ts>`
//!   (never over an existing file), a fresh journal is written from the
//!   lines that did parse, and the damage is recorded in it until an
//!   operator acknowledges it (`journal ack`). Until then the agent refuses
//!   new evacuations and migrations: a bad line may have been the start of a
//!   run we now know nothing about, and only a person can look.
//!
//! Moving the file aside rather than carrying bad lines forward verbatim:
//! a bad line's meaning depends on where it stood among the others
//! (a newer state of a run, or a new run), which a compacted journal cannot
//! keep; the original bytes stay intact for whoever investigates, and the
//! live journal stays one that parses.
//!
//! Compaction (at every open) writes a temporary file, fsyncs it, renames it
//! over the journal and fsyncs the directory, so a power cut leaves either
//! the old journal or the new one.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::model::Run;

/// The journal's file name in the state directory.
pub const FILE: &str = "journal.jsonl";

/// How many finished runs compaction keeps (the unfinished one is kept too).
const KEEP_RUNS: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot create the state directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot move the damaged journal {path} aside")]
    MoveAside {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the compacted journal {path}")]
    Compact {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the journal {path} for appending")]
    OpenAppend {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot record the acknowledgement in {path}")]
    Acknowledge {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub use crate::report::{Damage, JournalStatus};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Record {
    /// The whole run as it stands.
    Run { ts: String, run: Run },
    Maintenance {
        ts: String,
        on: bool,
        line: Option<String>,
    },
    /// The journal was damaged and moved aside; stands until acknowledged.
    Damaged(Damage),
    /// An operator acknowledged the damage, from this line.
    #[serde(rename = "damage_ack")]
    DamageAck { ts: String, line: Option<String> },
}

/// A line of the file that did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based.
    pub number: usize,
    pub why: String,
}

/// What the bytes of a journal file hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    pub records: Vec<Record>,
    pub bad: Vec<BadLine>,
    /// The bytes of an unterminated last line that does not parse.
    pub torn: Option<Vec<u8>>,
}

fn parse_line(bytes: &[u8]) -> Result<Record, String> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| format!("invalid UTF-8 at byte {}", e.valid_up_to()))?;
    serde_json::from_str(text).map_err(|e| format!("not a journal record: {e}"))
}

/// Parses a journal file's bytes, line by line; nothing is dropped without
/// being listed in `bad` or `torn`.
pub fn parse(bytes: &[u8]) -> Parsed {
    let mut p = Parsed::default();
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    // After the last newline: empty when the file ends with one, else an
    // unterminated line.
    let last = lines.pop().filter(|l| !l.is_empty());
    for (i, line) in lines.into_iter().enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_line(line) {
            Ok(r) => p.records.push(r),
            Err(why) => p.bad.push(BadLine { number: i + 1, why }),
        }
    }
    if let Some(line) = last {
        // A write cut just before its newline still holds a whole record.
        match parse_line(line) {
            Ok(r) => p.records.push(r),
            Err(_) => p.torn = Some(line.to_vec()),
        }
    }
    p
}

/// What a journal says: the maintenance flag, the latest state of each
/// run, oldest first, and damage not yet acknowledged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recovered {
    pub maintenance: bool,
    pub runs: Vec<Run>,
    /// When each finished run was first written finished (RFC 3339).
    pub finished_at: BTreeMap<u64, String>,
    pub damage: Option<Damage>,
    /// Where a torn last line was kept, when there was one.
    pub torn: Option<PathBuf>,
}

pub fn summarize(records: &[Record]) -> Recovered {
    let mut r = Recovered::default();
    for rec in records {
        match rec {
            Record::Maintenance { on, .. } => r.maintenance = *on,
            Record::Run { ts, run } => {
                if run.finished {
                    r.finished_at.entry(run.id).or_insert_with(|| ts.clone());
                }
                if let Some(existing) = r.runs.iter_mut().find(|x| x.id == run.id) {
                    *existing = run.clone();
                } else {
                    r.runs.push(run.clone());
                }
            }
            Record::Damaged(d) => r.damage = Some(d.clone()),
            Record::DamageAck { .. } => r.damage = None,
        }
    }
    r
}

/// The records a compacted journal holds: the maintenance flag, standing
/// damage, the last [`KEEP_RUNS`] runs and the latest unfinished run
/// wherever it is, in their order.
pub fn compacted(r: &Recovered, ts: &str) -> Vec<Record> {
    let mut out = vec![Record::Maintenance {
        ts: ts.to_owned(),
        on: r.maintenance,
        line: None,
    }];
    if let Some(d) = &r.damage {
        out.push(Record::Damaged(d.clone()));
    }
    let keep_from = r.runs.len().saturating_sub(KEEP_RUNS);
    let unfinished = r.runs.iter().rposition(|x| !x.finished);
    for (i, run) in r.runs.iter().enumerate() {
        if i >= keep_from || Some(i) == unfinished {
            out.push(Record::Run {
                ts: ts.to_owned(),
                run: run.clone(),
            });
        }
    }
    out
}

#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
    damage: Mutex<Option<Damage>>,
    torn: Option<PathBuf>,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `base`, or `base.1`, `base.2`, ... : the candidates for a file that must
/// not replace another.
fn candidates(base: &str) -> impl Iterator<Item = String> + '_ {
    std::iter::once(base.to_owned()).chain((1..1000).map(move |n| format!("{base}.{n}")))
}

/// Renames `name` in `dir` to the first free candidate of `base`, never
/// over an existing file.
fn move_aside(dir: &Path, name: &str, base: &str) -> std::io::Result<PathBuf> {
    use nix::fcntl::{renameat2, RenameFlags};
    let d = File::open(dir)?;
    for to in candidates(base) {
        match renameat2(&d, name, &d, to.as_str(), RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => {
                d.sync_all()?;
                return Ok(dir.join(to));
            }
            Err(nix::errno::Errno::EEXIST) => continue,
            // A file system without RENAME_NOREPLACE: check, then rename;
            // only this agent writes here.
            Err(nix::errno::Errno::EINVAL) => {
                if dir.join(&to).symlink_metadata().is_ok() {
                    continue;
                }
                std::fs::rename(dir.join(name), dir.join(&to))?;
                d.sync_all()?;
                return Ok(dir.join(to));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists))
}

/// Writes `bytes` to a new file named from `base` in `dir`, never over an
/// existing one, and syncs it.
fn write_new(dir: &Path, base: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    for name in candidates(base) {
        let path = dir.join(name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                f.write_all(bytes)?;
                f.sync_all()?;
                File::open(dir)?.sync_all()?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists))
}

/// Replaces the journal with `records`: temporary file, fsync, rename,
/// fsync of the directory.
fn rewrite(dir: &Path, path: &Path, records: &[Record]) -> std::io::Result<()> {
    let mut text = String::new();
    for rec in records {
        text.push_str(&serde_json::to_string(rec).map_err(std::io::Error::other)?);
        text.push('\n');
    }
    let tmp = dir.join(format!("{FILE}.new"));
    let mut f = File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// A short list of bad lines for the damage reason.
fn describe(bad: &[BadLine]) -> String {
    const SHOWN: usize = 3;
    let mut s = bad
        .iter()
        .take(SHOWN)
        .map(|b| format!("line {}: {}", b.number, b.why))
        .collect::<Vec<_>>()
        .join("; ");
    if bad.len() > SHOWN {
        s.push_str(&format!("; and {} more", bad.len() - SHOWN));
    }
    s
}

impl Journal {
    /// Opens (creating) the journal in `dir`, compacted to what recovery
    /// needs. A damaged journal is moved aside and reported in
    /// `Recovered::damage`; an error means the state directory cannot be
    /// used (or a damaged file cannot be moved aside), never that state
    /// was thrown away.
    pub fn open(dir: &Path) -> Result<(Journal, Recovered), JournalError> {
        Self::open_at(dir, unix_now())
    }

    /// [`Journal::open`] with the clock passed in: `now` names the side files.
    pub fn open_at(dir: &Path, now: u64) -> Result<(Journal, Recovered), JournalError> {
        std::fs::create_dir_all(dir).map_err(|source| JournalError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(FILE);
        let ts = crate::events::now_rfc3339();
        let (parsed, unreadable) = match std::fs::read(&path) {
            Ok(bytes) => (parse(&bytes), None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Parsed::default(), None),
            Err(e) => (Parsed::default(), Some(format!("it cannot be read: {e}"))),
        };
        let mut torn = None;
        let mut torn_lost = None;
        if let Some(bytes) = &parsed.torn {
            match write_new(dir, &format!("{FILE}.torn-{now}"), bytes) {
                Ok(p) => {
                    tracing::warn!(kept_in = %p.display(), bytes = bytes.len(), "the journal's last line was torn (a power cut?); skipped");
                    torn = Some(p);
                }
                Err(e) => torn_lost = Some(format!("its torn last line cannot be kept: {e}")),
            }
        }
        let reason = unreadable.or(torn_lost).or_else(|| {
            (!parsed.bad.is_empty()).then(|| {
                format!(
                    "{} of {} lines do not parse: {}",
                    parsed.bad.len(),
                    parsed.bad.len() + parsed.records.len(),
                    describe(&parsed.bad)
                )
            })
        });
        let mut recovered = summarize(&parsed.records);
        recovered.torn = torn.clone();
        if let Some(reason) = reason {
            let moved_to =
                move_aside(dir, FILE, &format!("{FILE}.damaged-{now}")).map_err(|source| {
                    JournalError::MoveAside {
                        path: path.clone(),
                        source,
                    }
                })?;
            if parsed.records.is_empty() && parsed.bad.is_empty() {
                // Nothing could be read: the host may have been in the middle
                // of an evacuation. Out of plans is the side to err on; an
                // operator can turn maintenance off.
                recovered.maintenance = true;
            }
            let d = Damage {
                at: ts.clone(),
                moved_to,
                reason,
                lines_kept: parsed.records.len(),
                lines_bad: parsed.bad.len(),
            };
            tracing::error!(moved_to = %d.moved_to.display(), reason = %d.reason, lines_kept = d.lines_kept, lines_bad = d.lines_bad, "journal damaged; moved aside");
            recovered.damage = Some(d);
        }
        rewrite(dir, &path, &compacted(&recovered, &ts)).map_err(|source| {
            JournalError::Compact {
                path: path.clone(),
                source,
            }
        })?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|source| JournalError::OpenAppend {
                path: path.clone(),
                source,
            })?;
        Ok((
            Journal {
                path,
                file: Mutex::new(file),
                damage: Mutex::new(recovered.damage.clone()),
                torn,
            },
            recovered,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Damage not yet acknowledged.
    pub fn damage(&self) -> Option<Damage> {
        self.damage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What every line should be told while the damage stands.
    pub fn warning(&self) -> Option<String> {
        self.damage().map(|d| format!("WARNING: {}", d.note()))
    }

    pub fn status(&self) -> JournalStatus {
        JournalStatus {
            path: self.path.clone(),
            damage: self.damage(),
            torn: self.torn.clone(),
        }
    }

    /// Clears standing damage, written down first (a restart must not bring
    /// it back, and an acknowledgement that was not recorded must not
    /// count). Returns what was acknowledged; `None` when nothing was.
    pub fn acknowledge(&self, line: &str) -> Result<Option<Damage>, JournalError> {
        let mut damage = self.damage.lock().unwrap_or_else(|e| e.into_inner());
        if damage.is_none() {
            return Ok(None);
        }
        self.append(&Record::DamageAck {
            ts: crate::events::now_rfc3339(),
            line: Some(line.to_owned()),
        })
        .map_err(|source| JournalError::Acknowledge {
            path: self.path.clone(),
            source,
        })?;
        let d = damage.take();
        tracing::warn!(line = %line, moved_to = ?d.as_ref().map(|d| d.moved_to.display().to_string()), "journal damage acknowledged");
        Ok(d)
    }

    fn append(&self, rec: &Record) -> std::io::Result<()> {
        let mut line = serde_json::to_string(rec).map_err(std::io::Error::other)?;
        line.push('\n');
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        f.write_all(line.as_bytes())?;
        f.sync_data()
    }

    /// Appends and syncs; a failure is logged, not fatal: the migration
    /// itself matters more than its record.
    pub fn write(&self, rec: &Record) {
        if let Err(e) = self.append(rec) {
            tracing::error!(cause = %e, path = %self.path.display(), "journal write failed");
        }
    }

    pub fn run(&self, run: &Run) {
        self.write(&Record::Run {
            ts: crate::events::now_rfc3339(),
            run: run.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::Kind;
    use super::*;

    fn run(id: u64, finished: bool) -> Run {
        Run {
            id,
            kind: Kind::Evacuate,
            poweroff: false,
            jobs: vec![],
            unplaceable: vec![],
            peer_reasons: vec![],
            aborting: false,
            finished,
            verdict: None,
            named: None,
        }
    }

    /// A temporary state directory, removed on drop.
    struct Dir(PathBuf);
    impl Dir {
        fn new(name: &str) -> Dir {
            let p = std::env::temp_dir().join(format!(
                "rackside-journal-{name}-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        fn file(&self) -> PathBuf {
            self.0.join(FILE)
        }
        fn names(&self) -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn line(rec: &Record) -> Vec<u8> {
        let mut l = serde_json::to_vec(rec).unwrap();
        l.push(b'\n');
        l
    }

    fn run_line(id: u64, finished: bool) -> Vec<u8> {
        line(&Record::Run {
            ts: "t".into(),
            run: run(id, finished),
        })
    }

    fn maint_line(on: bool) -> Vec<u8> {
        line(&Record::Maintenance {
            ts: "t".into(),
            on,
            line: None,
        })
    }

    fn ids(r: &Recovered) -> Vec<u64> {
        r.runs.iter().map(|r| r.id).collect()
    }

    const TORN: &[u8] = b"{\"type\":\"run\",\"ts\":\"x\",\"run\":{\"id\":5,";

    #[test]
    fn parse_keeps_every_line_accounted_for() {
        let mut bytes = maint_line(true);
        bytes.extend(b"\xff\xfe garbage\n");
        bytes.extend(run_line(1, false));
        bytes.extend(b"{\"type\":\"martian\"}\n");
        bytes.extend(b"   \n");
        bytes.extend(TORN);
        let p = parse(&bytes);
        assert_eq!(p.records.len(), 2);
        assert_eq!(
            p.bad.iter().map(|b| b.number).collect::<Vec<_>>(),
            vec![2, 4]
        );
        assert!(p.bad[0].why.starts_with("invalid UTF-8"), "{:?}", p.bad);
        assert!(
            p.bad[1].why.starts_with("not a journal record"),
            "{:?}",
            p.bad
        );
        assert_eq!(p.torn.as_deref(), Some(TORN));
    }

    #[test]
    fn parse_takes_a_whole_record_cut_before_its_newline() {
        let mut bytes = run_line(1, true);
        bytes.pop();
        let p = parse(&bytes);
        assert_eq!(p.records.len(), 1);
        assert_eq!(p.torn, None);
        assert!(p.bad.is_empty());
    }

    #[test]
    fn parse_reports_invalid_utf8_in_a_torn_last_line_as_torn() {
        let mut bytes = run_line(1, false);
        bytes.extend(b"{\"type\":\"run\",\"ts\":\"\xe2\x82");
        let p = parse(&bytes);
        assert_eq!(p.records.len(), 1);
        assert!(p.bad.is_empty());
        assert!(p.torn.is_some());
    }

    #[test]
    fn survives_a_restart_and_a_torn_line() {
        let dir = Dir::new("torn");
        {
            let (j, rec) = Journal::open_at(&dir.0, 100).unwrap();
            assert_eq!(rec, Recovered::default());
            j.write(&Record::Maintenance {
                ts: "t".into(),
                on: true,
                line: Some("/dev/ttyS1".into()),
            });
            for id in 1..=3 {
                j.run(&run(id, true));
            }
            j.run(&run(4, false));
        }
        // A power cut in the middle of a write.
        let mut f = OpenOptions::new().append(true).open(dir.file()).unwrap();
        f.write_all(TORN).unwrap();
        drop(f);
        let (j, rec) = Journal::open_at(&dir.0, 200).unwrap();
        assert!(rec.maintenance);
        assert_eq!(ids(&rec), vec![1, 2, 3, 4]);
        assert!(!rec.runs[3].finished);
        assert_eq!(rec.damage, None);
        assert_eq!(j.warning(), None);
        // The torn bytes are kept, not dropped.
        let torn = dir.0.join(format!("{FILE}.torn-200"));
        assert_eq!(rec.torn.as_deref(), Some(torn.as_path()));
        assert_eq!(std::fs::read(&torn).unwrap(), TORN);
        drop(j);
        // Compacted: the next open sees the last two.
        let (_j, rec) = Journal::open_at(&dir.0, 300).unwrap();
        assert_eq!(ids(&rec), vec![3, 4]);
        assert_eq!(rec.torn, None);
    }

    #[test]
    fn compaction_keeps_the_last_two_runs_and_the_unfinished_one() {
        let dir = Dir::new("compact");
        let mut bytes = maint_line(false);
        bytes.extend(run_line(1, true));
        bytes.extend(run_line(2, false));
        for id in 3..=6 {
            bytes.extend(run_line(id, true));
        }
        std::fs::write(dir.file(), &bytes).unwrap();
        let (_j, rec) = Journal::open_at(&dir.0, 1).unwrap();
        assert_eq!(ids(&rec), vec![1, 2, 3, 4, 5, 6]);
        drop(_j);
        let (_j, rec) = Journal::open_at(&dir.0, 2).unwrap();
        assert_eq!(ids(&rec), vec![2, 5, 6]);
        assert!(!rec.runs[0].finished);
        // A later state of a run replaces the earlier one in place.
        let r = summarize(&parse(&[run_line(7, false), run_line(7, true)].concat()).records);
        assert_eq!(ids(&r), vec![7]);
        assert!(r.runs[0].finished);
        // No temporary file is left behind.
        assert_eq!(dir.names(), vec![FILE.to_string()]);
    }

    /// Opens a journal whose middle holds `bad`, with an unfinished run
    /// after it, and checks nothing was lost.
    fn bad_middle_line_is_kept(bad: &[u8], name: &str) {
        let dir = Dir::new(name);
        let original = [
            maint_line(true),
            run_line(1, true),
            bad.to_vec(),
            run_line(2, false),
        ]
        .concat();
        std::fs::write(dir.file(), &original).unwrap();
        let (j, rec) = Journal::open_at(&dir.0, 1000).unwrap();
        // The unfinished run is recovered from the lines that parse.
        assert_eq!(ids(&rec), vec![1, 2]);
        assert!(!rec.runs[1].finished);
        assert!(rec.maintenance);
        let d = rec.damage.clone().expect("damage reported");
        assert_eq!((d.lines_kept, d.lines_bad), (3, 1));
        assert!(d.reason.contains("line 3:"), "{}", d.reason);
        // The whole file, bad line included, is kept byte for byte.
        let aside = dir.0.join(format!("{FILE}.damaged-1000"));
        assert_eq!(d.moved_to, aside);
        assert_eq!(std::fs::read(&aside).unwrap(), original);
        assert_eq!(j.damage(), Some(d.clone()));
        assert!(j.warning().unwrap().contains("journal ack"));
        drop(j);
        // The damage stands across a restart until acknowledged.
        let (j, rec) = Journal::open_at(&dir.0, 2000).unwrap();
        assert_eq!(rec.damage, Some(d.clone()));
        assert_eq!(ids(&rec), vec![1, 2]);
        assert_eq!(j.acknowledge("/dev/ttyS0").unwrap(), Some(d));
        assert_eq!(j.damage(), None);
        assert_eq!(j.acknowledge("/dev/ttyS0").unwrap(), None);
        drop(j);
        let (j, rec) = Journal::open_at(&dir.0, 3000).unwrap();
        assert_eq!(rec.damage, None);
        assert_eq!(j.warning(), None);
        assert!(std::fs::read(&aside).unwrap() == original);
    }

    #[test]
    fn invalid_utf8_in_the_middle_is_kept_aside() {
        bad_middle_line_is_kept(b"{\"type\":\"run\",\xff\xff}\n", "utf8");
    }

    #[test]
    fn a_bad_json_line_in_the_middle_is_kept_aside() {
        bad_middle_line_is_kept(b"{\"type\":\"run\",\"ts\":\n", "json");
    }

    #[test]
    fn invalid_utf8_at_the_end_is_a_torn_line() {
        let dir = Dir::new("utf8-end");
        let tail: &[u8] = b"{\"type\":\"run\",\"ts\":\"\xe2\x82";
        std::fs::write(dir.file(), [run_line(1, false), tail.to_vec()].concat()).unwrap();
        let (_j, rec) = Journal::open_at(&dir.0, 5).unwrap();
        assert_eq!(ids(&rec), vec![1]);
        assert_eq!(rec.damage, None);
        let kept = dir.0.join(format!("{FILE}.torn-5"));
        assert_eq!(std::fs::read(kept).unwrap(), tail);
    }

    #[test]
    fn an_unreadable_journal_is_moved_aside_never_overwritten() {
        let dir = Dir::new("unreadable");
        // As root no mode stops a read; a directory where the file should
        // be cannot be read by anyone.
        std::fs::create_dir(dir.file()).unwrap();
        std::fs::write(dir.file().join("inside"), b"evidence").unwrap();
        // An earlier damaged file with the same second must survive.
        let earlier = dir.0.join(format!("{FILE}.damaged-42"));
        std::fs::write(&earlier, b"earlier").unwrap();
        let (j, rec) = Journal::open_at(&dir.0, 42).unwrap();
        let d = rec.damage.clone().expect("damage reported");
        assert_eq!(d.moved_to, dir.0.join(format!("{FILE}.damaged-42.1")));
        assert!(d.reason.starts_with("it cannot be read"), "{}", d.reason);
        assert_eq!((d.lines_kept, d.lines_bad), (0, 0));
        assert_eq!(std::fs::read(&earlier).unwrap(), b"earlier");
        assert_eq!(
            std::fs::read(d.moved_to.join("inside")).unwrap(),
            b"evidence"
        );
        // Nothing known: the host stays out of plans.
        assert!(rec.maintenance);
        assert!(dir.file().is_file());
        drop(j);
        let (j, rec) = Journal::open_at(&dir.0, 43).unwrap();
        assert_eq!(rec.damage, Some(d.clone()));
        assert!(rec.maintenance);
        assert!(j.acknowledge("l").unwrap().is_some());
        drop(j);
        let (_j, rec) = Journal::open_at(&dir.0, 44).unwrap();
        assert_eq!(rec.damage, None);
    }

    #[test]
    fn damage_on_damage_keeps_both_files() {
        let dir = Dir::new("twice");
        std::fs::write(dir.file(), b"nonsense\n").unwrap();
        let (j, _) = Journal::open_at(&dir.0, 7).unwrap();
        drop(j);
        let mut f = OpenOptions::new().append(true).open(dir.file()).unwrap();
        f.write_all(b"more nonsense\n").unwrap();
        drop(f);
        let (_j, rec) = Journal::open_at(&dir.0, 7).unwrap();
        assert_eq!(
            rec.damage.unwrap().moved_to,
            dir.0.join(format!("{FILE}.damaged-7.1"))
        );
        assert_eq!(
            std::fs::read(dir.0.join(format!("{FILE}.damaged-7"))).unwrap(),
            b"nonsense\n"
        );
    }
}
