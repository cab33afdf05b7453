//! Reading [`Readings`] from a sysfs tree. The root is configurable
//! (`[health] sysfs_root`), so the lab gives a host fixture files and the
//! tests a temporary directory. Whatever is missing or unreadable is
//! simply not read: a host without EDAC or hwmon drivers is not unhealthy
//! for it.

use std::fs;
use std::path::Path;

use super::{Alarm, LinkState, McCounts, Readings, Thermal};

pub fn read(root: &Path, links: &[String]) -> Readings {
    Readings {
        edac: edac(root),
        thermal: thermal(root),
        alarms: alarms(root),
        links: links.iter().map(|l| link(root, l)).collect(),
        probes: Vec::new(),
    }
}

fn text(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_owned())
}

fn number<T: std::str::FromStr>(p: &Path) -> Option<T> {
    text(p)?.parse().ok()
}

/// Entries of `dir` whose names start with `prefix`, sorted by name.
fn entries(dir: &Path, prefix: &str) -> Vec<(String, std::path::PathBuf)> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<(String, std::path::PathBuf)> = rd
        .filter_map(Result::ok)
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(n, _)| n.starts_with(prefix))
        .collect();
    v.sort();
    v
}

fn edac(root: &Path) -> Vec<McCounts> {
    entries(&root.join("devices/system/edac/mc"), "mc")
        .into_iter()
        .filter_map(|(name, p)| {
            Some(McCounts {
                corrected: number(&p.join("ce_count"))?,
                uncorrected: number(&p.join("ue_count"))?,
                name,
            })
        })
        .collect()
}

fn thermal(root: &Path) -> Vec<Thermal> {
    entries(&root.join("class/thermal"), "thermal_zone")
        .into_iter()
        .filter_map(|(name, p)| {
            let temp_mc = number(&p.join("temp"))?;
            let critical_mc = entries(&p, "trip_point_")
                .into_iter()
                .filter(|(n, _)| n.ends_with("_type"))
                .filter(|(_, tp)| text(tp).as_deref() == Some("critical"))
                .filter_map(|(n, _)| number::<i64>(&p.join(n.replace("_type", "_temp"))))
                .filter(|t| *t > 0)
                .min();
            let name = match text(&p.join("type")) {
                Some(t) => format!("{name} ({t})"),
                None => name,
            };
            Some(Thermal {
                name,
                temp_mc,
                critical_mc,
            })
        })
        .collect()
}

fn alarms(root: &Path) -> Vec<Alarm> {
    let mut out = Vec::new();
    for (hw, p) in entries(&root.join("class/hwmon"), "hwmon") {
        let chip = text(&p.join("name"));
        for (file, fp) in entries(&p, "") {
            if !file.ends_with("_alarm") || number::<u64>(&fp) != Some(1) {
                continue;
            }
            let critical = ["_crit_alarm", "_emergency_alarm", "_lcrit_alarm"]
                .iter()
                .any(|s| file.ends_with(s));
            let name = match &chip {
                Some(c) => format!("{hw} ({c}) {file}"),
                None => format!("{hw} {file}"),
            };
            out.push(Alarm { name, critical });
        }
    }
    out
}

fn link(root: &Path, name: &str) -> LinkState {
    let dir = root.join("class/net").join(name);
    let operstate = text(&dir.join("operstate"));
    let carrier = number::<u8>(&dir.join("carrier"));
    let up = match &operstate {
        None if !dir.exists() => None,
        // `unknown` is what virtual and some simple drivers report while
        // working: the carrier decides.
        Some(s) if s == "up" || s == "unknown" => Some(carrier != Some(0)),
        _ => Some(false),
    };
    LinkState {
        name: name.to_owned(),
        up,
        operstate: operstate.unwrap_or_else(|| "unreadable".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tree(std::path::PathBuf);
    impl Tree {
        fn new(tag: &str) -> Tree {
            let d =
                std::env::temp_dir().join(format!("rackside-sysfs-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&d);
            fs::create_dir_all(&d).unwrap();
            Tree(d)
        }
        fn put(&self, rel: &str, v: &str) -> &Tree {
            let p = self.0.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, format!("{v}\n")).unwrap();
            self
        }
    }
    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn reads_every_source_from_a_fixture_tree() {
        let t = Tree::new("all");
        t.put("devices/system/edac/mc/mc0/ce_count", "4")
            .put("devices/system/edac/mc/mc0/ue_count", "1")
            .put("devices/system/edac/mc/mc1/ce_count", "junk")
            .put("class/thermal/thermal_zone0/type", "x86_pkg_temp")
            .put("class/thermal/thermal_zone0/temp", "45000")
            .put("class/thermal/thermal_zone0/trip_point_0_type", "passive")
            .put("class/thermal/thermal_zone0/trip_point_0_temp", "80000")
            .put("class/thermal/thermal_zone0/trip_point_1_type", "critical")
            .put("class/thermal/thermal_zone0/trip_point_1_temp", "105000")
            .put("class/hwmon/hwmon1/name", "nct6775")
            .put("class/hwmon/hwmon1/fan2_alarm", "1")
            .put("class/hwmon/hwmon1/temp1_crit_alarm", "1")
            .put("class/hwmon/hwmon1/temp2_alarm", "0")
            .put("class/net/eno1/operstate", "up")
            .put("class/net/eno1/carrier", "1")
            .put("class/net/eno2/operstate", "down")
            .put("class/net/veth0/operstate", "unknown")
            .put("class/net/veth0/carrier", "1");
        let links = ["eno1", "eno2", "veth0", "gone0"].map(String::from);
        let r = read(&t.0, &links);
        assert_eq!(
            r.edac,
            [McCounts {
                name: "mc0".into(),
                corrected: 4,
                uncorrected: 1
            }],
            "mc1 cannot be read and is left out"
        );
        assert_eq!(
            r.thermal,
            [Thermal {
                name: "thermal_zone0 (x86_pkg_temp)".into(),
                temp_mc: 45_000,
                critical_mc: Some(105_000)
            }]
        );
        assert_eq!(
            r.alarms,
            [
                Alarm {
                    name: "hwmon1 (nct6775) fan2_alarm".into(),
                    critical: false
                },
                Alarm {
                    name: "hwmon1 (nct6775) temp1_crit_alarm".into(),
                    critical: true
                },
            ]
        );
        let ups: Vec<Option<bool>> = r.links.iter().map(|l| l.up).collect();
        assert_eq!(ups, [Some(true), Some(false), Some(true), None]);
    }

    #[test]
    fn an_empty_root_reads_as_nothing_wrong() {
        let t = Tree::new("empty");
        assert_eq!(read(&t.0, &[]), Readings::default());
    }
}
