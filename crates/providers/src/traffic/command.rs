//! The `command` router: any CLI as a load balancer. A set template with `{canary}` and
//! `{baseline}`, a verify command whose output a regex turns back into a split.

use std::fmt;
use std::time::Duration;

use regex::Regex;

use super::process::Shell;
use super::{BoxFuture, Split, TrafficError, TrafficRouter};

const ROUTER: &str = "command";

/// Configuration of the `command` router.
///
/// Example for Railway: `set_template = "railway service update relay --traffic-split
/// main:{canary},r0.5-hotfix:{baseline}"`, `verify_template = "railway service show relay"`,
/// `verify_regex = "main:(?P<canary>\d+)"`.
#[derive(Clone)]
pub struct CommandConfig {
    /// Run with `sh -c` to set the split; `{canary}` and `{baseline}` become the percentages.
    pub set_template: String,
    /// Run with `sh -c` to read the split back (no placeholders).
    pub verify_template: String,
    /// Applied to the verify command's stdout; must have a named group `canary` (percent) and
    /// may have `baseline` (checked to make 100 with it).
    pub verify_regex: String,
    /// Longest either command may run; it is killed (with its children) after that.
    pub timeout: Duration,
    /// Extra environment for both commands — where credentials go. Values are secrets: they
    /// never appear in `Debug`, errors or `describe`.
    pub env: Vec<(String, String)>,
}

impl fmt::Debug for CommandConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env: Vec<String> = self.env.iter().map(|(k, _)| format!("{k}=***")).collect();
        f.debug_struct("CommandConfig")
            .field(
                "set_template",
                &super::process::scrub(&self.set_template, &self.env),
            )
            .field(
                "verify_template",
                &super::process::scrub(&self.verify_template, &self.env),
            )
            .field("verify_regex", &self.verify_regex)
            .field("timeout", &self.timeout)
            .field("env", &env)
            .finish()
    }
}

/// The `command` router.
#[derive(Debug)]
pub struct CommandRouter {
    cfg: CommandConfig,
    regex: Regex,
}

impl CommandRouter {
    /// Checks the templates and compiles the regex.
    pub fn new(cfg: CommandConfig) -> Result<Self, TrafficError> {
        let config = |reason: String| TrafficError::Config {
            router: ROUTER,
            reason,
        };
        if !cfg.set_template.contains("{canary}") && !cfg.set_template.contains("{baseline}") {
            return Err(config(
                "the set template uses neither {canary} nor {baseline}: it could not set any split"
                    .into(),
            ));
        }
        if cfg.verify_template.trim().is_empty() {
            return Err(config(
                "the verify command is empty: give a command that prints the split".into(),
            ));
        }
        let regex = Regex::new(&cfg.verify_regex)
            .map_err(|e| config(format!("verify regex does not compile: {e}")))?;
        if !regex.capture_names().any(|n| n == Some("canary")) {
            return Err(config(
                "verify regex has no named group `canary`: write it like `main:(?P<canary>\\d+)`"
                    .into(),
            ));
        }
        if cfg.timeout.is_zero() {
            return Err(config("timeout must be longer than zero".into()));
        }
        Ok(CommandRouter { cfg, regex })
    }

    fn shell(&self) -> Shell<'_> {
        Shell {
            router: ROUTER,
            timeout: self.cfg.timeout,
            env: &self.cfg.env,
        }
    }

    /// The split in the verify command's output.
    fn parse(&self, stdout: &str) -> Result<Split, TrafficError> {
        let unreadable = |detail: String| TrafficError::Unreadable {
            router: ROUTER,
            what: "the verify command's output".into(),
            detail,
        };
        let captures = self.regex.captures(stdout).ok_or_else(|| {
            unreadable(format!(
                "`{}` does not match: {}",
                self.cfg.verify_regex,
                excerpt(stdout)
            ))
        })?;
        let number = |group: &str| -> Result<Option<u8>, TrafficError> {
            match captures.name(group) {
                None => Ok(None),
                Some(m) => m.as_str().trim().parse::<u8>().map(Some).map_err(|_| {
                    unreadable(format!(
                        "group `{group}` captured `{}`, not a percentage",
                        m.as_str()
                    ))
                }),
            }
        };
        let canary =
            number("canary")?.ok_or_else(|| unreadable("group `canary` did not match".into()))?;
        let split = Split::with_canary(canary)
            .map_err(|_| unreadable(format!("canary {canary} is not a percentage")))?;
        if let Some(baseline) = number("baseline")?
            && baseline != split.baseline
        {
            return Err(unreadable(format!(
                "canary {canary} and baseline {baseline} do not make 100"
            )));
        }
        Ok(split)
    }
}

fn excerpt(text: &str) -> String {
    let text = text.trim();
    if text.is_empty() {
        return "(no output)".into();
    }
    let cut: String = text.chars().take(300).collect();
    if cut.len() < text.len() {
        format!("`{cut}…`")
    } else {
        format!("`{cut}`")
    }
}

impl TrafficRouter for CommandRouter {
    fn name(&self) -> &'static str {
        ROUTER
    }

    fn set(&self, canary_pct: u8) -> BoxFuture<'_, Result<(), TrafficError>> {
        Box::pin(async move {
            let split = Split::with_canary(canary_pct)?;
            let command = self
                .cfg
                .set_template
                .replace("{canary}", &split.canary.to_string())
                .replace("{baseline}", &split.baseline.to_string());
            self.shell().run(&command).await.map(|_| ())
        })
    }

    fn get(&self) -> BoxFuture<'_, Result<Split, TrafficError>> {
        Box::pin(async move {
            let output = self.shell().run(&self.cfg.verify_template).await?;
            self.parse(&output.stdout)
        })
    }

    fn describe(&self) -> BoxFuture<'_, Result<String, TrafficError>> {
        Box::pin(async move {
            let shell = self.shell();
            let output = shell.run(&self.cfg.verify_template).await?;
            let split = self
                .parse(&output.stdout)
                .map_or_else(|e| format!("unreadable: {e}"), |s| s.to_string());
            Ok(format!(
                "command router\nverify: {}\nsplit: {split}\noutput:\n{}\n",
                shell.scrub(&self.cfg.verify_template),
                output.stdout.trim_end()
            ))
        })
    }
}
