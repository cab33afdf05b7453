//! argv -> what to do. Pure: the caller passes argv[0], the arguments and
//! whether `RACKSIDE_HOOK_FORCE_QEMU=1` is set.

use std::path::Path;

/// One call from libvirt: `HOOK VM OPERATION SUB_OPERATION EXTRA`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub vm: String,
    pub op: String,
    pub subop: String,
    /// libvirt always passes it (`-` when it has nothing to say); a
    /// missing one reads as `-`.
    pub extra: String,
}

impl Call {
    pub fn is(&self, op: &str, subop: &str) -> bool {
        self.op == op && self.subop == subop
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    Help,
    Version,
    /// Not a qemu hook call, or too few arguments: do nothing, exit 0.
    Ignore,
    Hook(Call),
}

/// libvirt runs qemu hooks as `/etc/libvirt/hooks/qemu` or
/// `/etc/libvirt/hooks/qemu.d/NAME`.
pub fn invoked_as_qemu_hook(argv0: &str) -> bool {
    let path = Path::new(argv0);
    let file_is_qemu = path.file_name().is_some_and(|f| f == "qemu");
    let dir_is_qemu_d = path
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|d| d == "qemu.d");
    file_is_qemu || dir_is_qemu_d
}

/// `args` excludes argv[0].
pub fn parse(argv0: &str, args: &[String], force_qemu: bool) -> Invocation {
    // A single flag only: libvirt always passes four arguments, and a VM
    // may well be named `--help`; usage must never reach a migration's
    // stdout.
    if let [only] = args {
        match only.as_str() {
            "--help" | "-h" => return Invocation::Help,
            "--version" | "-V" => return Invocation::Version,
            _ => {}
        }
    }
    if !(force_qemu || invoked_as_qemu_hook(argv0)) {
        return Invocation::Ignore;
    }
    match args {
        [vm, op, subop, rest @ ..] => Invocation::Hook(Call {
            vm: vm.clone(),
            op: op.clone(),
            subop: subop.clone(),
            extra: rest.first().cloned().unwrap_or_else(|| "-".to_owned()),
        }),
        _ => Invocation::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn qemu_d_directory_is_a_hook() {
        let inv = parse(
            "/etc/libvirt/hooks/qemu.d/rackside-hook",
            &v(&["web1", "migrate", "begin", "-"]),
            false,
        );
        assert_eq!(
            inv,
            Invocation::Hook(Call {
                vm: "web1".into(),
                op: "migrate".into(),
                subop: "begin".into(),
                extra: "-".into()
            })
        );
    }

    #[test]
    fn file_named_qemu_is_a_hook() {
        assert!(invoked_as_qemu_hook("/etc/libvirt/hooks/qemu"));
        assert!(invoked_as_qemu_hook("qemu"));
        assert!(invoked_as_qemu_hook("qemu.d/x"));
    }

    #[test]
    fn other_directories_are_ignored() {
        let a = v(&["net", "started", "begin", "-"]);
        for argv0 in [
            "/etc/libvirt/hooks/network.d/rackside-hook",
            "/etc/libvirt/hooks/network",
            "/usr/bin/rackside-hook",
            "rackside-hook",
            "/etc/libvirt/hooks/qemu.d.bak/rackside-hook",
            "/etc/libvirt/hooks/qemu-x",
            "",
        ] {
            assert_eq!(parse(argv0, &a, false), Invocation::Ignore, "{argv0}");
        }
    }

    #[test]
    fn force_env_counts_as_qemu() {
        let inv = parse(
            "/tmp/x/rackside-hook",
            &v(&["a", "started", "begin", "-"]),
            true,
        );
        assert!(matches!(inv, Invocation::Hook(_)));
    }

    #[test]
    fn too_few_arguments_are_ignored() {
        let argv0 = "/etc/libvirt/hooks/qemu.d/h";
        assert_eq!(parse(argv0, &v(&[]), false), Invocation::Ignore);
        assert_eq!(parse(argv0, &v(&["a"]), false), Invocation::Ignore);
        assert_eq!(
            parse(argv0, &v(&["a", "migrate"]), false),
            Invocation::Ignore
        );
    }

    #[test]
    fn missing_extra_reads_as_dash() {
        match parse("/x/qemu.d/h", &v(&["a", "release", "end"]), false) {
            Invocation::Hook(c) => assert_eq!(c.extra, "-"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn help_and_version_only_alone() {
        assert_eq!(parse("h", &v(&["--help"]), false), Invocation::Help);
        assert_eq!(parse("h", &v(&["-V"]), false), Invocation::Version);
        // A VM named --help is a VM, not a request for usage.
        let inv = parse(
            "/x/qemu.d/h",
            &v(&["--help", "migrate", "begin", "-"]),
            false,
        );
        assert!(matches!(inv, Invocation::Hook(c) if c.vm == "--help"));
    }
}
