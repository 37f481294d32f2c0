//! Running operator-supplied shell commands for routers: `sh -c`, a timeout that kills the
//! whole process group, output captured, and secret values scrubbed from anything reported.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::TrafficError;

/// Longest stderr tail kept in an error.
const STDERR_TAIL: usize = 2_000;

/// A finished command's output (secrets already scrubbed).
pub(crate) struct ShellOutput {
    pub stdout: String,
}

/// What to run and how.
pub(crate) struct Shell<'a> {
    pub router: &'static str,
    pub timeout: Duration,
    /// Extra environment; the values are secrets and are scrubbed from every report.
    pub env: &'a [(String, String)],
}

impl Shell<'_> {
    /// Runs `command` with `sh -c`. A non-zero exit is [`TrafficError::Command`] with the
    /// stderr tail; running past the timeout kills the process group and is
    /// [`TrafficError::Timeout`].
    pub async fn run(&self, command: &str) -> Result<ShellOutput, TrafficError> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(command)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout can stop the command's children too.
            .process_group(0)
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|source| TrafficError::Io {
            router: self.router,
            what: format!("cannot start `sh -c {}`", self.scrub(command)),
            source,
        })?;
        let pid = child.id();
        match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(Ok(output)) => {
                let stdout = self.scrub(&String::from_utf8_lossy(&output.stdout));
                if output.status.success() {
                    Ok(ShellOutput { stdout })
                } else {
                    let stderr = self.scrub(&String::from_utf8_lossy(&output.stderr));
                    let stderr = if stderr.trim().is_empty() {
                        stdout
                    } else {
                        stderr
                    };
                    Err(TrafficError::Command {
                        router: self.router,
                        command: self.scrub(command),
                        status: output.status.to_string(),
                        stderr: tail(&stderr, STDERR_TAIL),
                    })
                }
            }
            Ok(Err(source)) => Err(TrafficError::Io {
                router: self.router,
                what: format!("waiting for `{}`", self.scrub(command)),
                source,
            }),
            Err(_) => {
                if let Some(pid) = pid {
                    kill_group(pid).await;
                }
                Err(TrafficError::Timeout {
                    router: self.router,
                    what: format!("`{}`", self.scrub(command)),
                    after: self.timeout,
                })
            }
        }
    }

    /// `text` with every non-trivial environment value replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        scrub(text, self.env)
    }
}

/// `text` with every environment value of 4 characters or more replaced by `***`.
pub(crate) fn scrub(text: &str, env: &[(String, String)]) -> String {
    let mut out = text.to_owned();
    for (_, value) in env {
        if value.len() >= 4 {
            out = out.replace(value.as_str(), "***");
        }
    }
    out
}

fn tail(text: &str, max: usize) -> String {
    let text = text.trim_end();
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

/// Kills the process group led by `pid` (the command and everything it started).
async fn kill_group(pid: u32) {
    let result = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    if let Err(err) = result {
        tracing::warn!(pid, error = %err, "could not kill a timed-out command's process group");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_scrubbed_and_tails_cut_on_char_boundaries() {
        let env = vec![
            ("TOKEN".to_owned(), "s3cr3t-value".to_owned()),
            ("X".into(), "1".into()),
        ];
        assert_eq!(scrub("auth s3cr3t-value, x=1", &env), "auth ***, x=1");
        assert_eq!(tail("ééé", 3), "…é");
        assert_eq!(tail("short\n", 100), "short");
    }
}
