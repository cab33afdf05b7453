//! Crashed VMs: what happened ([`kind_of`], from libvirt's lifecycle
//! events), what to do about it ([`decide`], pure), and doing it
//! ([`handler`]).

pub mod decide;
pub mod domxml;
pub mod handler;

pub use decide::{decide, Action, Budget, CrashKind, Decision, Disks, Policy, Situation};

/// The crash a lifecycle event reports, if it reports one:
/// `crashed` (8) is a guest that panicked (pvpanic, the domain kept);
/// `stopped` (5) with detail `crashed` (2) a guest that crashed and was
/// stopped, with detail `failed` (5) QEMU dying under it; `suspended` (3)
/// with detail `watchdog` (3) a guest whose watchdog fired with the
/// action `pause` (it no longer runs). A watchdog's `poweroff` ends QEMU,
/// so it arrives as QEMU dying; its `reset` reboots the guest, which then
/// runs again by itself.
pub fn kind_of(event: i32, detail: i32) -> Option<CrashKind> {
    match (event, detail) {
        (8, _) => Some(CrashKind::Panicked),
        (5, 2) => Some(CrashKind::Crashed),
        (5, 5) => Some(CrashKind::QemuDied),
        (3, 3) => Some(CrashKind::Watchdog),
        _ => None,
    }
}

/// A stop that only ends a crash already reported: libvirt emits
/// `crashed` when a guest panics, then, carrying out the VM's on_crash
/// action, `stopped`/`crashed`. Handling both would restart it twice.
pub fn is_aftermath(kind: CrashKind, was: Option<crate::inventory::model::VmState>) -> bool {
    kind == CrashKind::Crashed && was == Some(crate::inventory::model::VmState::Crashed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stop_after_a_panic_is_the_same_crash() {
        use crate::inventory::model::VmState;
        assert!(is_aftermath(CrashKind::Crashed, Some(VmState::Crashed)));
        assert!(!is_aftermath(CrashKind::Crashed, Some(VmState::Running)));
        assert!(!is_aftermath(CrashKind::Panicked, Some(VmState::Crashed)));
        assert!(!is_aftermath(CrashKind::QemuDied, Some(VmState::Crashed)));
    }

    #[test]
    fn only_crashes_are_crashes() {
        assert_eq!(kind_of(8, 0), Some(CrashKind::Panicked));
        assert_eq!(kind_of(5, 2), Some(CrashKind::Crashed));
        assert_eq!(kind_of(5, 5), Some(CrashKind::QemuDied));
        // shut down, destroyed, migrated, saved, from a snapshot; started.
        for detail in [0, 1, 3, 4, 6] {
            assert_eq!(kind_of(5, detail), None, "stopped/{detail}");
        }
        assert_eq!(kind_of(2, 0), None);
        assert_eq!(kind_of(3, 3), Some(CrashKind::Watchdog));
        // paused by a person, for a migration, on an I/O error: not crashes.
        for detail in [0, 1, 2] {
            assert_eq!(kind_of(3, detail), None, "suspended/{detail}");
        }
    }
}
