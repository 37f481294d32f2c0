//! `canary init`: write the commented runbook configuration, generate into `.env.canary` the
//! secrets the runbook does not stage, and keep what canary writes next to the configuration
//! out of git.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use canary_evidence::generate_keypair;

use crate::config::settings::EvidenceSettings;
use crate::config::{Config, INIT_TEMPLATE, env};

/// Write canary.toml encoding the runbook: 5/95 split for 60 minutes, the runbook's guardrails,
/// T+15/30/60 snapshots, the 100-query burst at T+5, 24 h cooldown. Next to it, `.env.canary`
/// gets the evidence signing key and the Alertmanager callback token when it has none (mode
/// 600), and `.gitignore` the lines that keep credentials, run state and evidence out of git.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  canary init                      writes ./canary.toml (+ .env.canary secrets, .gitignore lines)
  canary init --out prod.toml      another path
  canary init --out -              print to stdout (writes nothing else)")]
pub struct InitArgs {
    /// Where to write it (`-` for stdout).
    #[arg(long, short, default_value = "canary.toml")]
    out: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    force: bool,
}

/// The variable `[evidence] signing_key` names in the template.
const SIGNING_KEY: &str = "CANARY_SIGNING_KEY";
/// The variable `[alertmanager] callback_token` names in the template.
const ALERT_TOKEN: &str = "CANARY_ALERT_TOKEN";

pub fn run(args: InitArgs) -> anyhow::Result<i32> {
    if args.out.as_os_str() == "-" {
        crate::output::write_stdout_bytes(INIT_TEMPLATE.as_bytes());
        return Ok(0);
    }
    if args.out.exists() && !args.force {
        anyhow::bail!(
            "{} already exists: pass --force to overwrite it, or --out to write elsewhere",
            args.out.display()
        );
    }
    std::fs::write(&args.out, INIT_TEMPLATE)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!(
        "wrote {}: the relay runbook (5 % canary for 60m, the runbook's guardrails, burst at T+5).",
        args.out.display(),
    );
    let dir = args
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    for line in generate_secrets(dir)? {
        eprintln!("{line}");
    }
    let ignore = dir.join(".gitignore");
    let added = add_ignore_lines(&ignore, &ignored_paths())?;
    if !added.is_empty() {
        eprintln!("added {} to {}", added.join(", "), ignore.display());
    }
    eprintln!(
        "next: put the runbook's credentials in {} (chmod 600), then `canary validate -c {}`",
        dir.join(env::ENV_FILE).display(),
        args.out.display()
    );
    Ok(0)
}

/// What canary writes next to a configuration made from the template: credentials, run state,
/// evidence bundles (as `.gitignore` patterns).
fn ignored_paths() -> [String; 3] {
    [
        env::ENV_FILE.to_owned(),
        format!("{}/", Config::DEFAULT_STATE_DIR),
        format!("{}/", EvidenceSettings::DEFAULT_DIR),
    ]
}

/// Appends to `.env.canary` in `dir` (created with mode 600) the secrets the template needs and
/// the runbook does not stage, unless the file or the environment already has them; returns
/// what to tell the operator (never a secret's value).
fn generate_secrets(dir: &Path) -> anyhow::Result<Vec<String>> {
    let path = dir.join(env::ENV_FILE);
    let existing = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let vars = match &existing {
        Some(text) => env::parse_env_file(text)
            .map_err(|(line, msg)| anyhow::anyhow!("{}:{line}: {msg}", path.display()))?,
        None => Default::default(),
    };
    let has = |name: &str| {
        vars.get(name).is_some_and(|v| !v.is_empty())
            || std::env::var(name).is_ok_and(|v| !v.is_empty())
    };
    let mut text = String::new();
    let mut told = Vec::new();
    if !has(SIGNING_KEY) {
        let pair = generate_keypair()?;
        text.push_str(&format!(
            "# canary init: signs each evidence bundle ([evidence] signing_key). Public key, for\n# `canary verify --key`: {}\n{SIGNING_KEY}={}\n",
            pair.public_hex,
            pair.secret_hex.expose()
        ));
        told.push(format!(
            "generated the evidence signing key as {SIGNING_KEY} in {} (public key {}: publish it for `canary verify --key`)",
            path.display(),
            pair.public_hex
        ));
    }
    if !has(ALERT_TOKEN) {
        let token = crate::run::random_token();
        text.push_str(&format!(
            "# canary init: the bearer token Alertmanager sends to the controller's callback\n# ([alertmanager] callback_token; `canary render alertmanager` refers to it by name).\n{ALERT_TOKEN}={}\n",
            token.expose()
        ));
        told.push(format!(
            "generated the Alertmanager callback token as {ALERT_TOKEN} in {}",
            path.display()
        ));
    }
    if text.is_empty() {
        return Ok(told);
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Applies only when the file is created; an existing file keeps its mode (validate
        // warns when others can read it).
        opts.mode(0o600);
    }
    let mut file = opts
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    if existing
        .as_ref()
        .is_some_and(|t| !t.is_empty() && !t.ends_with('\n'))
    {
        text.insert(0, '\n');
    }
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(told)
}

/// Appends to the `.gitignore` at `path` each of `patterns` it does not already have (as
/// written, or anchored with `/`, with or without the trailing `/`); returns those added.
fn add_ignore_lines(path: &Path, patterns: &[String]) -> anyhow::Result<Vec<String>> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let key = |line: &str| {
        line.trim()
            .trim_start_matches('/')
            .trim_end_matches('/')
            .to_owned()
    };
    let have: std::collections::HashSet<String> = existing.lines().map(key).collect();
    let added: Vec<String> = patterns
        .iter()
        .filter(|p| !have.contains(&key(p)))
        .cloned()
        .collect();
    if added.is_empty() {
        return Ok(added);
    }
    let mut text = String::new();
    if !existing.is_empty() && !existing.ends_with('\n') {
        text.push('\n');
    }
    text.push_str("# canary: credentials, run state and evidence bundles\n");
    for p in &added {
        text.push_str(p);
        text.push('\n');
    }
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(added)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is a test failure

    use super::*;

    #[test]
    fn ignore_lines_are_appended_once_and_respect_equivalent_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".gitignore");
        std::fs::write(&path, "/target\n/.env.canary").unwrap();
        let added = add_ignore_lines(&path, &ignored_paths()).unwrap();
        assert_eq!(added, [".canary/", "canary-evidence/"]);
        assert!(
            add_ignore_lines(&path, &ignored_paths())
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "/target\n/.env.canary\n# canary: credentials, run state and evidence bundles\n.canary/\ncanary-evidence/\n"
        );
    }
}
