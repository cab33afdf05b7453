//! rasdaemon's records of machine checks (MCE) and memory-controller
//! errors, read with `ras-mc-ctl --errors` or, without it, straight from
//! its database with the `sqlite3` tool. Counted like EDAC: the totals at
//! the first run are a baseline, and only records new since the last run
//! count. A new uncorrected error is faulty; `edac_ce_degraded` new
//! corrected ones are degraded.
//!
//! Memory-controller records are the same events EDAC counts in sysfs; on
//! a host with both, a memory error shows under both (one cause, two
//! reasons). MCE records also cover caches, buses and the CPU itself.

use super::ProbeError;
use crate::health::{Finding, Level};

/// rasdaemon's database, where its package puts it.
pub const DATABASE: &str = "/var/lib/rasdaemon/ras-mc_event.db";

/// Totals of the records, by kind and severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub mc_corrected: u64,
    pub mc_uncorrected: u64,
    pub mce_corrected: u64,
    pub mce_uncorrected: u64,
}

/// The `sqlite3` arguments (before the database) that print [`Counts`]:
/// one row per table, always, even when empty. Each query is its own
/// `-cmd`, so a rasdaemon built without MCE (no `mce_record` table) still
/// gives the memory-controller row.
pub const SQL: [&str; 2] = [
    "SELECT 'mc', \
     COALESCE(SUM(CASE WHEN err_type = 'Corrected' THEN err_count END), 0), \
     COALESCE(SUM(CASE WHEN err_type IN ('Uncorrected', 'Fatal') THEN err_count END), 0) \
     FROM mc_event;",
    // MCi_STATUS bit 61 (UC): the error was not corrected.
    "SELECT 'mce', \
     COALESCE(SUM(((status >> 61) & 1) = 0), 0), \
     COALESCE(SUM((status >> 61) & 1), 0) \
     FROM mce_record;",
];

/// `sqlite3 -batch -separator '|'` output of [`SQL`]: `mc|CE|UE` and,
/// where the table exists, `mce|CE|UE`.
pub fn parse_sqlite(output: &str) -> Result<Counts, ProbeError> {
    let mut c = Counts::default();
    let mut mc = false;
    for line in output.lines() {
        let f: Vec<&str> = line.trim().split('|').collect();
        let [kind, ce, ue] = f.as_slice() else {
            continue;
        };
        let n = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| ProbeError::Format(format!("{s:?} is not a count")))
        };
        match *kind {
            "mc" => {
                (c.mc_corrected, c.mc_uncorrected) = (n(ce)?, n(ue)?);
                mc = true;
            }
            "mce" => (c.mce_corrected, c.mce_uncorrected) = (n(ce)?, n(ue)?),
            _ => {}
        }
    }
    // rasdaemon always has mc_event: without its row the database was
    // not read.
    if !mc {
        return Err(ProbeError::Format("no mc_event counts".into()));
    }
    Ok(c)
}

/// `ras-mc-ctl --errors`: every record, one line each, under a heading
/// per table (`Memory controller events:`, `MCE events:`, ...; `No Memory
/// errors.` when a table is empty). Memory-controller lines carry a count
/// and a type (`... 1 Corrected error(s): ...`); MCE lines carry the
/// decoded status (`mci Uncorrected_error`, `mci Corrected_error`).
pub fn parse_errors(output: &str) -> Result<Counts, ProbeError> {
    #[derive(PartialEq)]
    enum Section {
        Mc,
        Mce,
        Other,
    }
    let mut c = Counts::default();
    let mut section = Section::Other;
    let mut understood = false;
    for line in output.lines() {
        let line = line.trim();
        match line {
            "Memory controller events:" => {
                section = Section::Mc;
                understood = true;
                continue;
            }
            "MCE events:" => {
                section = Section::Mce;
                continue;
            }
            "No Memory errors." => {
                understood = true;
                section = Section::Other;
                continue;
            }
            "" => {
                section = Section::Other;
                continue;
            }
            _ if line.ends_with(':') || line.starts_with("No ") => {
                section = Section::Other;
                continue;
            }
            _ => {}
        }
        if !line.starts_with(|ch: char| ch.is_ascii_digit()) {
            continue;
        }
        match section {
            Section::Mc => {
                let words: Vec<&str> = line.split_whitespace().collect();
                let Some(i) = words.iter().position(|w| *w == "error(s):") else {
                    continue;
                };
                let (Some(count), Some(kind)) = (
                    i.checked_sub(2).and_then(|j| words[j].parse::<u64>().ok()),
                    i.checked_sub(1).map(|j| words[j]),
                ) else {
                    continue;
                };
                match kind {
                    "Corrected" => c.mc_corrected += count,
                    "Uncorrected" | "Fatal" => c.mc_uncorrected += count,
                    _ => {}
                }
            }
            Section::Mce if line.contains("Uncorrected_error") => c.mce_uncorrected += 1,
            Section::Mce => c.mce_corrected += 1,
            Section::Other => {}
        }
    }
    if !understood {
        return Err(ProbeError::Format(
            "no memory-controller section in ras-mc-ctl --errors".into(),
        ));
    }
    Ok(c)
}

/// The totals at the last run.
#[derive(Debug, Default)]
pub struct Ras {
    last: Option<Counts>,
}

impl Ras {
    /// This run's findings: what is new since the last run.
    pub fn assess(&mut self, now: Counts, ce_degraded: u64) -> Vec<Finding> {
        // First sight: a baseline, not news.
        let before = self.last.replace(now).unwrap_or(now);
        // A total that went down is a new database: count from zero.
        let new = |n: u64, b: u64| if n >= b { n - b } else { n };
        let mce_ue = new(now.mce_uncorrected, before.mce_uncorrected);
        let mc_ue = new(now.mc_uncorrected, before.mc_uncorrected);
        let ce = new(now.mce_corrected, before.mce_corrected)
            + new(now.mc_corrected, before.mc_corrected);
        let mut out = Vec::new();
        for (n, key, what) in [
            (mce_ue, "ras:mce:ue", "uncorrected machine-check error"),
            (mc_ue, "ras:mc:ue", "uncorrected memory-controller error"),
        ] {
            if n > 0 {
                out.push(Finding {
                    level: Level::Faulty,
                    key: key.into(),
                    reason: format!("rasdaemon: {n} new {what}{}", plural(n)),
                });
            }
        }
        if ce >= ce_degraded.max(1) {
            out.push(Finding {
                level: Level::Degraded,
                key: "ras:ce".into(),
                reason: format!(
                    "rasdaemon: {ce} new corrected machine-check and memory error{}",
                    plural(ce)
                ),
            });
        }
        out
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `ras-mc-ctl --errors` on an Intel host: two corrected DIMM errors,
    /// one uncorrected; a corrected and an uncorrected MCE.
    pub(crate) const ERRORS: &str = "\
Memory controller events:
1 2024-03-02 11:21:46 +0100 1 Corrected error(s): memory read error at CPU_SrcID#0_MC#0_Chan#1_DIMM#0 location: 0:1:0:-1, addr 0x1a2b3c40, grain 32, syndrome 0 err_code:0x0101:0x0090 ProcessorSocketId:0x0 MemoryControllerId:0x0 PhysicalRankId:0x0 Row:0x3a4 Column:0x1b0 Bank:0x2 BankGroup:0x1 ChannelId:0x1 DimmSlotId:0x0
2 2024-03-02 11:29:03 +0100 1 Corrected error(s): memory read error at CPU_SrcID#0_MC#0_Chan#1_DIMM#0 location: 0:1:0:-1, addr 0x1a2b3c80, grain 32, syndrome 0 err_code:0x0101:0x0090
3 2024-03-04 02:10:55 +0100 1 Uncorrected error(s): memory scrubbing error at CPU_SrcID#1_MC#0_Chan#0_DIMM#0 location: 1:0:0:-1, addr 0x8f0012c0, grain 32, syndrome 0 err_code:0x0008:0x00c0

PCIe AER events:
1 2024-03-01 08:00:12 +0100 0000:3b:00.0 Corrected error: Receiver Error

No Extlog errors.

MCE events:
1 2024-03-02 11:21:46 +0100 error: MEMORY CONTROLLER RD_CHANNEL1_ERR Transaction: Memory read error, CPU Intel Xeon, bank Memory Controller, mcg mcgstatus=0, mci Corrected_error, n_errors: 1, mcgcap=0x0f000c14, status=0x8c00004000010091, addr=0x1a2b3c40, misc=0x200001c020001086, walltime=0x65e2fd6a, cpuid=0x00050657, bank=0x0000000d
2 2024-03-04 02:10:55 +0100 error: MEMORY CONTROLLER MS_CHANNEL0_ERR Transaction: Memory scrubbing error, mcg mcgstatus=0, mci Uncorrected_error Error_enabled SRAO, mcgcap=0x0f000c14, status=0xbd800000000800c0, addr=0x8f0012c0, bank=0x0000000e

No devlink errors.

No disk errors.
";

    #[test]
    fn counts_the_records_of_ras_mc_ctl() {
        assert_eq!(
            parse_errors(ERRORS).unwrap(),
            Counts {
                mc_corrected: 2,
                mc_uncorrected: 1,
                mce_corrected: 1,
                mce_uncorrected: 1,
            }
        );
        let none = "No Memory errors.\n\nNo PCIe AER errors.\n\nNo MCE errors.\n\n";
        assert_eq!(parse_errors(none).unwrap(), Counts::default());
        assert!(parse_errors("Can't locate DBI.pm in @INC\n").is_err());
        assert!(parse_errors("").is_err());
    }

    #[test]
    fn reads_the_counts_of_the_database() {
        assert_eq!(
            parse_sqlite("mc|2|1\nmce|1|1\n").unwrap(),
            Counts {
                mc_corrected: 2,
                mc_uncorrected: 1,
                mce_corrected: 1,
                mce_uncorrected: 1,
            }
        );
        assert_eq!(
            parse_sqlite("mc|0|0\n").unwrap(),
            Counts::default(),
            "no mce_record table"
        );
        assert!(parse_sqlite("").is_err(), "nothing read");
        assert!(parse_sqlite("mc|x|0\n").is_err());
    }

    /// The queries against a real database of rasdaemon's schema (its
    /// columns that matter), when the sqlite3 tool is here.
    #[test]
    fn the_queries_count_a_real_database() {
        let Some(sqlite3) =
            super::super::run::find(&std::env::var_os("PATH").unwrap_or_default(), "sqlite3")
        else {
            eprintln!("no sqlite3 here: skipped");
            return;
        };
        let t = super::super::run::tests::Tools::new("ras-db");
        let db = t.0.join("ras-mc_event.db");
        let db = db.to_str().unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let limit = std::time::Duration::from_secs(60);
        let setup = "CREATE TABLE mc_event (id INTEGER PRIMARY KEY, timestamp TEXT, \
             err_count INTEGER, err_type TEXT, err_msg TEXT, label TEXT);\
             INSERT INTO mc_event (err_count, err_type) VALUES \
             (1, 'Corrected'), (3, 'Corrected'), (1, 'Uncorrected'), (1, 'Info');";
        super::super::run::run(&sqlite3, &[db, setup], limit, &stop).unwrap();
        let count = || {
            let mut args = vec!["-readonly", "-batch", "-separator", "|"];
            for q in SQL {
                args.extend(["-cmd", q]);
            }
            args.push(db);
            let o = super::super::run::run(&sqlite3, &args, limit, &stop).unwrap();
            parse_sqlite(&o.stdout)
        };
        assert_eq!(
            count().unwrap(),
            Counts {
                mc_corrected: 4,
                mc_uncorrected: 1,
                ..Counts::default()
            },
            "without an mce_record table"
        );
        let mce = "CREATE TABLE mce_record (id INTEGER PRIMARY KEY, status INTEGER);\
             INSERT INTO mce_record (status) VALUES \
             (-8358680633521667951), (-4791830003521683264), (-4791830003521683264);";
        super::super::run::run(&sqlite3, &[db, mce], limit, &stop).unwrap();
        let c = count().unwrap();
        assert_eq!((c.mce_corrected, c.mce_uncorrected), (1, 2));
    }

    fn c(mc_ce: u64, mc_ue: u64, mce_ce: u64, mce_ue: u64) -> Counts {
        Counts {
            mc_corrected: mc_ce,
            mc_uncorrected: mc_ue,
            mce_corrected: mce_ce,
            mce_uncorrected: mce_ue,
        }
    }

    fn reasons(f: Vec<Finding>) -> Vec<(Level, String)> {
        f.into_iter().map(|f| (f.level, f.reason)).collect()
    }

    #[test]
    fn history_is_a_baseline_and_new_records_count() {
        let mut r = Ras::default();
        assert_eq!(r.assess(c(40, 2, 40, 3), 10), [], "old records");
        assert_eq!(
            reasons(r.assess(c(42, 2, 41, 4), 10)),
            [(
                Level::Faulty,
                "rasdaemon: 1 new uncorrected machine-check error".into()
            )]
        );
        assert_eq!(r.assess(c(42, 2, 41, 4), 10), [], "nothing new");
        assert_eq!(
            reasons(r.assess(c(47, 4, 46, 4), 10)),
            [
                (
                    Level::Faulty,
                    "rasdaemon: 2 new uncorrected memory-controller errors".into()
                ),
                (
                    Level::Degraded,
                    "rasdaemon: 10 new corrected machine-check and memory errors".into()
                ),
            ]
        );
    }

    #[test]
    fn a_new_database_counts_from_zero() {
        let mut r = Ras::default();
        r.assess(c(40, 2, 40, 3), 10);
        assert_eq!(
            reasons(r.assess(c(0, 0, 0, 1), 10)),
            [(
                Level::Faulty,
                "rasdaemon: 1 new uncorrected machine-check error".into()
            )]
        );
    }
}
