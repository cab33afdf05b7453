//! The BMC's sensors, from `ipmitool sdr elist` (or `sdr list`): each
//! sensor's status as the BMC judges it against its own thresholds.
//!
//! - `cr` / `nr` (critical, non-recoverable; `elist` says `lcr`, `ucr`,
//!   `lnr`, `unr`: lower or upper): faulty.
//! - `nc` (`lnc`, `unc`: non-critical, a warning): degraded.
//! - `ok`, `ns` (no reading) and anything else: nothing.
//!
//! A state, not a count: the finding lasts while the BMC reports it.

use super::ProbeError;
use crate::health::{Finding, Level};

/// One sensor line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sensor {
    pub name: String,
    /// `elist`'s sensor number (`0Eh`): names are not unique on every BMC
    /// (three `Temp` sensors on some). Empty for `list`.
    pub number: String,
    /// `ok`, `ns`, `nc`, `cr`, `nr`, `lcr`, `unc`, ...
    pub status: String,
    /// `45 degrees C`, `3500 RPM`, `Presence detected`, or empty.
    pub reading: String,
}

/// The sensors of `ipmitool sdr elist` (`name | number | status | entity |
/// reading`) or `ipmitool sdr list` (`name | reading | status`). Lines of
/// neither shape are skipped; output with no sensor line at all is not
/// sensor output.
pub fn parse_sdr(output: &str) -> Result<Vec<Sensor>, ProbeError> {
    let mut out = Vec::new();
    let mut other = 0;
    for line in output.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('|').map(str::trim).collect();
        let sensor = match f.as_slice() {
            [name, number, status, _entity, reading] => Sensor {
                name: name.to_string(),
                number: number.to_string(),
                status: status.to_string(),
                reading: reading.to_string(),
            },
            [name, reading, status] => Sensor {
                name: name.to_string(),
                number: String::new(),
                status: status.to_string(),
                reading: reading.to_string(),
            },
            _ => {
                other += 1;
                continue;
            }
        };
        if sensor.name.is_empty() {
            other += 1;
            continue;
        }
        out.push(sensor);
    }
    if out.is_empty() && other > 0 {
        return Err(ProbeError::Format("no sensor lines".into()));
    }
    Ok(out)
}

/// The sensors the BMC holds out of range.
pub fn findings(sensors: &[Sensor]) -> Vec<Finding> {
    let mut out: Vec<Finding> = Vec::new();
    for s in sensors {
        let status = s.status.to_ascii_lowercase();
        let (level, words) = match status.trim_start_matches(['l', 'u']) {
            "cr" => (Level::Faulty, "is critical"),
            "nr" => (Level::Faulty, "is non-recoverable"),
            "nc" => (Level::Degraded, "is at a warning level (non-critical)"),
            _ => continue,
        };
        let mut key = if s.number.is_empty() {
            format!("ipmi:{}", s.name)
        } else {
            format!("ipmi:{}:{}", s.name, s.number)
        };
        // `list` has no numbers: a second sensor of the same name gets
        // its own key all the same.
        let base = key.clone();
        let mut n = 1;
        while out.iter().any(|f| f.key == key) {
            n += 1;
            key = format!("{base}#{n}");
        }
        let reason = if s.reading.is_empty() {
            format!("BMC: {} {words}", s.name)
        } else {
            format!("BMC: {} {} {words}", s.name, s.reading)
        };
        out.push(Finding { level, key, reason });
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `ipmitool sdr elist` on a two-socket board with a hot CPU, a
    /// stopped fan, a weak CMOS battery and a fan with no reading.
    pub(crate) const ELIST: &str = "\
CPU1 Temp        | 01h | ok  |  3.1 | 45 degrees C
CPU2 Temp        | 02h | ucr |  3.2 | 98 degrees C
PCH Temp         | 0Ah | ok  |  7.1 | 52 degrees C
System Temp      | 0Bh | ok  |  7.1 | 31 degrees C
FAN1             | 41h | ok  | 29.1 | 3500 RPM
FAN2             | 42h | lnr | 29.2 | 0 RPM
FAN3             | 43h | ns  | 29.3 | No Reading
12V              | 30h | ok  |  7.17 | 12.19 Volts
VBAT             | 35h | lnc |  7.1 | 2.71 Volts
PS1 Status       | C8h | ok  | 10.1 | Presence detected
Temp             | 0Eh | ok  |  3.1 | 40 degrees C
Temp             | 0Fh | ok  |  3.2 | 41 degrees C
Chassis Intru    | AAh | ok  | 23.1 | 
";

    /// `ipmitool sdr list`: the same BMC, the short form.
    const LIST: &str = "\
CPU1 Temp        | 45 degrees C      | ok
CPU2 Temp        | 98 degrees C      | cr
FAN2             | 0 RPM             | nr
FAN3             | no reading        | ns
VBAT             | 2.71 Volts        | nc
Temp             | disabled          | cr
Temp             | disabled          | cr
";

    #[test]
    fn parses_both_forms() {
        let e = parse_sdr(ELIST).unwrap();
        assert_eq!(e.len(), 13);
        assert_eq!(
            e[1],
            Sensor {
                name: "CPU2 Temp".into(),
                number: "02h".into(),
                status: "ucr".into(),
                reading: "98 degrees C".into(),
            }
        );
        assert_eq!(e[12].reading, "", "a discrete sensor without text");
        let l = parse_sdr(LIST).unwrap();
        assert_eq!(
            l[1],
            Sensor {
                name: "CPU2 Temp".into(),
                number: String::new(),
                status: "cr".into(),
                reading: "98 degrees C".into(),
            }
        );
        assert_eq!(parse_sdr("").unwrap(), []);
        assert!(parse_sdr("Could not open device at /dev/ipmi0: No such file\n").is_err());
    }

    #[test]
    fn critical_is_faulty_non_critical_degraded() {
        let got: Vec<(Level, String, String)> = findings(&parse_sdr(ELIST).unwrap())
            .into_iter()
            .map(|f| (f.level, f.key, f.reason))
            .collect();
        assert_eq!(
            got,
            [
                (
                    Level::Faulty,
                    "ipmi:CPU2 Temp:02h".into(),
                    "BMC: CPU2 Temp 98 degrees C is critical".into()
                ),
                (
                    Level::Faulty,
                    "ipmi:FAN2:42h".into(),
                    "BMC: FAN2 0 RPM is non-recoverable".into()
                ),
                (
                    Level::Degraded,
                    "ipmi:VBAT:35h".into(),
                    "BMC: VBAT 2.71 Volts is at a warning level (non-critical)".into()
                ),
            ]
        );
    }

    #[test]
    fn sensors_of_one_name_keep_their_own_findings() {
        let keys: Vec<String> = findings(&parse_sdr(LIST).unwrap())
            .into_iter()
            .map(|f| f.key)
            .collect();
        assert_eq!(
            keys,
            [
                "ipmi:CPU2 Temp",
                "ipmi:FAN2",
                "ipmi:VBAT",
                "ipmi:Temp",
                "ipmi:Temp#2"
            ]
        );
    }

    #[test]
    fn all_ok_is_nothing() {
        let ok = "CPU1 Temp        | 01h | ok  |  3.1 | 45 degrees C\n";
        assert_eq!(findings(&parse_sdr(ok).unwrap()), []);
    }
}
