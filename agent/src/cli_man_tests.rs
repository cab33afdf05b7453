//! packaging/man/rackside-agent.8 against the code it documents: the
//! command line (from clap's own definition), the console commands (from
//! the protocol's help table) and the configuration keys (from the shipped
//! example, whose keys config.rs's tests prove real). Both directions, so
//! the page names nothing that does not exist and leaves nothing out.

use std::collections::BTreeSet;

use clap::CommandFactory;

use super::Cli;

const PAGE: &str = include_str!("../../packaging/man/rackside-agent.8");
const EXAMPLE: &str = include_str!("../../packaging/agent.toml");

/// The lines of the `.SH NAME` section (up to the next `.SH`).
fn section(name: &str) -> Vec<&'static str> {
    let head = format!(".SH {name}");
    let head_quoted = format!(".SH \"{name}\"");
    PAGE.lines()
        .skip_while(|l| *l != head && *l != head_quoted)
        .skip(1)
        .take_while(|l| !l.starts_with(".SH "))
        .collect()
}

/// Roff text as read: font escapes dropped, `\-` a hyphen.
fn plain(roff: &str) -> String {
    let mut s = roff.replace("\\-", "-");
    for font in ["\\fB", "\\fI", "\\fR", "\\fP"] {
        s = s.replace(font, "");
    }
    s
}

/// The tag line of each `.TP` item in `lines`, as read.
fn tags(lines: &[&str]) -> Vec<String> {
    lines
        .windows(2)
        .filter(|w| w[0] == ".TP")
        .map(|w| {
            let tag = w[1];
            let tag = [".BI ", ".BR ", ".B ", ".I "]
                .iter()
                .find_map(|m| tag.strip_prefix(m))
                .unwrap_or(tag);
            plain(&tag.replace('"', ""))
        })
        .collect()
}

/// Every long and short option and every subcommand clap knows, help and
/// version included.
fn cli() -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    fn walk(
        cmd: &clap::Command,
        longs: &mut BTreeSet<String>,
        shorts: &mut BTreeSet<String>,
        subs: &mut BTreeSet<String>,
    ) {
        for arg in cmd.get_arguments() {
            longs.extend(arg.get_long().map(str::to_owned));
            shorts.extend(arg.get_short().map(String::from));
        }
        for sub in cmd.get_subcommands() {
            subs.insert(sub.get_name().to_owned());
            walk(sub, longs, shorts, subs);
        }
    }
    let mut cmd = Cli::command();
    cmd.build();
    let (mut longs, mut shorts, mut subs) = Default::default();
    walk(&cmd, &mut longs, &mut shorts, &mut subs);
    (longs, shorts, subs)
}

/// The options `lines` name: `\-\-word` and `\-X`.
fn options_named(lines: &[&str]) -> (BTreeSet<String>, BTreeSet<String>) {
    let text = lines.join("\n");
    let (mut longs, mut shorts) = (BTreeSet::new(), BTreeSet::new());
    for (i, _) in text.match_indices("\\-") {
        let rest = &text[i + 2..];
        if let Some(long) = rest.strip_prefix("\\-") {
            let name: String = long
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            longs.insert(name);
        } else if !text[..i].ends_with("\\-") {
            let mut chars = rest.chars();
            if let (Some(c), next) = (chars.next(), chars.next()) {
                if c.is_ascii_alphabetic() && !next.is_some_and(|n| n.is_ascii_alphanumeric()) {
                    shorts.insert(c.to_string());
                }
            }
        }
    }
    (longs, shorts)
}

#[test]
fn every_option_and_subcommand_is_documented_and_nothing_else() {
    let (longs, shorts, subs) = cli();
    assert!(longs.contains("baud") && shorts.contains("c") && subs.contains("console"));
    let cli_lines: Vec<&str> = ["SYNOPSIS", "SUBCOMMANDS", "OPTIONS"]
        .iter()
        .flat_map(|s| section(s))
        .collect();
    let (named_longs, named_shorts) = options_named(&cli_lines);
    assert_eq!(named_longs, longs, "long options: the page vs clap");
    assert_eq!(named_shorts, shorts, "short options: the page vs clap");
    // Each option has its own item, in OPTIONS or under its subcommand.
    let items: Vec<String> = tags(&section("SUBCOMMANDS"))
        .into_iter()
        .chain(tags(&section("OPTIONS")))
        .collect();
    for long in &longs {
        assert!(
            items.iter().any(|t| t.contains(&format!("--{long}"))),
            "--{long} has no item: {items:?}"
        );
    }
    let documented: BTreeSet<String> = tags(&section("SUBCOMMANDS"))
        .iter()
        .filter(|t| !t.starts_with('-') && !t.starts_with('('))
        .filter_map(|t| t.split_whitespace().next().map(str::to_owned))
        .collect();
    assert_eq!(documented, subs, "subcommands: the page vs clap");
    let synopsis = plain(&section("SYNOPSIS").join("\n"));
    for sub in &subs {
        assert!(
            synopsis.contains(&format!("rackside-agent {sub}")),
            "{sub} not in SYNOPSIS"
        );
    }
}

#[test]
fn the_console_commands_are_those_of_help_in_its_order() {
    let usages: Vec<&str> = rackside_protocol::HELP.iter().map(|i| i.usage).collect();
    assert_eq!(tags(&section("CONSOLE COMMANDS")), usages);
}

/// `[section]` -> keys, as the shipped example has them (commented or not).
fn example_keys() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut table = String::new();
    for line in EXAMPLE.lines() {
        let line = line.strip_prefix('#').unwrap_or(line);
        if line.starts_with('[') {
            table = line.to_owned();
        } else if let Some((key, _)) = line.split_once(" = ") {
            if key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                out.insert((table.clone(), key.to_owned()));
            }
        }
    }
    out
}

#[test]
fn every_configuration_key_is_documented_in_its_section() {
    let lines = section("CONFIGURATION");
    let mut documented = BTreeSet::new();
    let mut table = String::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some(t) = line.strip_prefix(".SS ") {
            table = t.to_owned();
        } else if *line == ".TP" {
            if let Some(key) = lines.get(i + 1).and_then(|l| l.strip_prefix(".B ")) {
                documented.insert((table.clone(), key.to_owned()));
            }
        }
    }
    let example = example_keys();
    assert!(example.len() > 30, "{example:?}");
    assert_eq!(documented, example);
}
