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
