//! The journal: every run is written down before it starts and at each
//! change of a job's phase, so a restarted agent knows what it was doing.
//! JSON lines, appended and fsynced; a torn last line (power cut) is
//! skipped on reading.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::model::Run;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot open the journal at {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

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
}

#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
}

fn read_records(path: &Path) -> Vec<Record> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// What a journal says: the maintenance flag and the latest state of each
/// run, oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recovered {
    pub maintenance: bool,
    pub runs: Vec<Run>,
}

pub fn summarize(records: &[Record]) -> Recovered {
    let mut r = Recovered::default();
    for rec in records {
        match rec {
            Record::Maintenance { on, .. } => r.maintenance = *on,
            Record::Run { run, .. } => {
                if let Some(existing) = r.runs.iter_mut().find(|x| x.id == run.id) {
                    *existing = run.clone();
                } else {
                    r.runs.push(run.clone());
                }
            }
        }
    }
    r
}

impl Journal {
    /// Opens (creating) the journal in `dir`, compacted to what recovery
    /// needs: the maintenance flag and the last two runs.
    pub fn open(dir: &Path) -> Result<(Journal, Recovered), JournalError> {
        let err = |source| JournalError::Open {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let path = dir.join("journal.jsonl");
        let recovered = summarize(&read_records(&path));
        let keep_from = recovered.runs.len().saturating_sub(2);
        let ts = crate::events::now_rfc3339();
        let mut text = serde_json::to_string(&Record::Maintenance {
            ts: ts.clone(),
            on: recovered.maintenance,
            line: None,
        })
        .unwrap_or_default();
        text.push('\n');
        for run in &recovered.runs[keep_from..] {
            text.push_str(
                &serde_json::to_string(&Record::Run {
                    ts: ts.clone(),
                    run: run.clone(),
                })
                .unwrap_or_default(),
            );
            text.push('\n');
        }
        let tmp = dir.join("journal.jsonl.new");
        std::fs::write(&tmp, text).map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)?;
        let file = OpenOptions::new().append(true).open(&path).map_err(err)?;
        Ok((
            Journal {
                path,
                file: Mutex::new(file),
            },
            recovered,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends and syncs; a failure is logged, not fatal: the migration
    /// itself matters more than its record.
    pub fn write(&self, rec: &Record) {
        let mut line = match serde_json::to_string(rec) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(cause = %e, "journal record not serialisable");
                return;
            }
        };
        line.push('\n');
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = f.write_all(line.as_bytes()).and_then(|()| f.sync_data()) {
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
            aborting: false,
            finished,
            verdict: None,
            named: None,
        }
    }

    #[test]
    fn survives_a_restart_and_a_torn_line() {
        let dir = std::env::temp_dir().join(format!("rackside-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let (j, rec) = Journal::open(&dir).unwrap();
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
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join("journal.jsonl"))
            .unwrap();
        f.write_all(b"{\"type\":\"run\",\"ts\":\"x\",\"run\":{\"id\":5,")
            .unwrap();
        drop(f);
        let (_j, rec) = Journal::open(&dir).unwrap();
        assert!(rec.maintenance);
        assert_eq!(
            rec.runs.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert!(!rec.runs[3].finished);
        // Compacted: the next open sees only the last two.
        let (_j, rec) = Journal::open(&dir).unwrap();
        assert_eq!(
            rec.runs.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![3, 4]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
