//! Running the machine's tools (ip, virsh, nsenter, ...) with errors that
//! say which command failed and what it printed.

use std::process::{Command, Output};

#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("could not run `{cmd}`")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{cmd}` exited with {status}: {stderr}")]
    Failed {
        cmd: String,
        status: String,
        stderr: String,
    },
}

/// Marks every descriptor above stderr close-on-exec in the child: a
/// long-lived lab process (anchor, libvirtd, storage daemon) must not keep
/// what the test process inherited, such as the lock of a `flock
/// /work/lab.lock cargo test` around it, or a lab left running holds the
/// lock for ever.
pub fn no_inherited_fds(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: runs in the child between fork and exec; close_range(2) is a
    // single syscall, async-signal-safe, allocating nothing. Close-on-exec
    // rather than close: std's own exec-error pipe must stay open until
    // the exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            Ok(())
        })
    }
}

/// Renders a command line for messages.
pub fn render(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion; non-zero exit is an error carrying stderr.
pub fn run(cmd: &mut Command) -> Result<Output, CmdError> {
    let rendered = render(cmd);
    let out = cmd.output().map_err(|source| CmdError::Spawn {
        cmd: rendered.clone(),
        source,
    })?;
    if out.status.success() {
        Ok(out)
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Err(CmdError::Failed {
            cmd: rendered,
            status: out.status.to_string(),
            stderr: if stderr.is_empty() { stdout } else { stderr },
        })
    }
}

/// Runs a program with arguments and returns its stdout as text.
pub fn stdout<I, S>(program: &str, args: I) -> Result<String, CmdError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = run(Command::new(program).args(args))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    #[test]
    fn lab_daemons_do_not_inherit_descriptors() {
        let file = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: dup(2) of a valid descriptor; the copy (inheritable, as a
        // flock holder's is) is owned by one OwnedFd.
        let inheritable = unsafe { OwnedFd::from_raw_fd(libc::dup(file.as_raw_fd())) };
        let fd = inheritable.as_raw_fd().to_string();
        let seen = |c: &mut Command| {
            let out = run(c.args(["-c", "ls /proc/self/fd"])).unwrap();
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .any(|f| f == fd)
        };
        assert!(seen(&mut Command::new("sh")), "the test's premise");
        assert!(!seen(no_inherited_fds(&mut Command::new("sh"))));
    }
}
