//! `${VAR}` resolution: the process environment, after `.env.canary` next to the config file.
//!
//! Missing variables are collected, not reported one at a time, so an operator fixes them all in
//! one go. Values of variables never appear in errors or logs; only names do.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use canary_core::Secret;
use toml::Spanned;

/// The file the runbook stages credentials in.
pub const ENV_FILE: &str = ".env.canary";

/// Variables from the environment and `.env.canary`, and the names that were asked for but not
/// set.
#[derive(Debug, Default)]
pub struct Env {
    file_vars: HashMap<String, String>,
    /// Where `.env.canary` was read from, if it was.
    pub file: Option<PathBuf>,
    /// Missing variable → every place it is used.
    missing: BTreeMap<String, Vec<Range<usize>>>,
    /// Problems with the file itself (tracked by git, readable by others).
    pub warnings: Vec<String>,
    /// Every variable name resolved so far (for `validate`'s summary).
    pub used: std::collections::BTreeSet<String>,
    /// Resolve nothing: every `${VAR}` yields an empty value and nothing counts as missing.
    offline: bool,
}

impl Env {
    /// Loads `.env.canary` from `dir` if it exists. The process environment wins over the file.
    pub fn load(dir: &Path) -> Result<Env, String> {
        let path = dir.join(ENV_FILE);
        let mut env = Env::default();
        if !path.exists() {
            return Ok(env);
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        env.file_vars = parse_env_file(&text)
            .map_err(|(line, msg)| format!("{}:{line}: {msg}", path.display()))?;
        env.warnings = file_warnings(&path);
        env.file = Some(path);
        Ok(env)
    }

    /// An environment that resolves nothing (`validate --no-env`).
    pub fn offline() -> Env {
        Env {
            offline: true,
            ..Env::default()
        }
    }

    fn lookup(&self, name: &str) -> Option<String> {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| self.file_vars.get(name).filter(|v| !v.is_empty()).cloned())
    }

    /// Expands `${VAR}` (and `$$` → `$`) in a value. Missing variables are recorded with the
    /// value's span and expand to nothing.
    pub fn expand(&mut self, text: &Spanned<String>) -> String {
        self.expand_typed(text).text
    }

    /// [`Env::expand`] for a value that is typed next (a number, a duration, a choice): says
    /// which variables it came from, and whether every one of them had a value (a missing one
    /// is reported with the others; offline, one without a default cannot be checked).
    pub fn expand_typed(&mut self, text: &Spanned<String>) -> Expanded {
        let span = text.span();
        let offline = self.offline;
        let (out, names) = expand_with(text.get_ref(), |name| {
            if offline { None } else { self.lookup(name) }
        });
        let mut complete = true;
        let mut variables = Vec::new();
        for (name, found) in names {
            self.used.insert(name.clone());
            complete &= found;
            if !found && !offline {
                self.missing
                    .entry(name.clone())
                    .or_default()
                    .push(span.clone());
            }
            variables.push(name);
        }
        Expanded {
            text: out,
            variables,
            complete,
        }
    }

    /// Whether variables are left unresolved (`validate --no-env`).
    pub fn is_offline(&self) -> bool {
        self.offline
    }

    /// [`Env::expand`] for a credential.
    pub fn secret(&mut self, text: &Spanned<String>) -> Secret {
        Secret::new(self.expand(text))
    }

    /// A variable nothing in the file names, read only if set (`CANARY_STATE_URL`): never
    /// missing. Counted as used when it is.
    pub fn optional(&mut self, name: &str) -> Option<Secret> {
        if self.offline {
            return None;
        }
        let value = self.lookup(name)?;
        self.used.insert(name.to_owned());
        Some(Secret::new(value))
    }

    /// Missing variables and where each is used.
    pub fn missing(&self) -> &BTreeMap<String, Vec<Range<usize>>> {
        &self.missing
    }
}

/// A value after `${VAR}` expansion ([`Env::expand_typed`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Expanded {
    pub text: String,
    /// The variables it names, in order.
    pub variables: Vec<String>,
    /// Every variable had a value (or a default).
    pub complete: bool,
}

/// Expands `${NAME}` using `lookup`, and `${NAME:-default}` to `default` when `lookup` has no
/// value (as a shell does); returns the text and `(name, found)` for each reference, where a
/// default counts as found. A `$` not followed by `{` or `$` is kept as it is.
pub fn expand_with(
    text: &str,
    mut lookup: impl FnMut(&str) -> Option<String>,
) -> (String, Vec<(String, bool)>) {
    let mut out = String::with_capacity(text.len());
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{')
            && let Some(end) = body.find('}')
            && let Some((name, default)) = reference(&body[..end])
        {
            match lookup(name).or_else(|| default.map(str::to_owned)) {
                Some(v) => {
                    out.push_str(&v);
                    names.push((name.to_owned(), true));
                }
                None => names.push((name.to_owned(), false)),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    (out, names)
}

/// The inside of `${...}`: `NAME` or `NAME:-default`.
fn reference(inside: &str) -> Option<(&str, Option<&str>)> {
    let (name, default) = match inside.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (inside, None),
    };
    is_var_name(name).then_some((name, default))
}

/// Whether `s` can name a variable (`${NAME}`).
pub fn is_var_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// Parses `KEY=VALUE` lines (`export ` prefix, `#` comments, single or double quotes).
pub fn parse_env_file(text: &str) -> Result<HashMap<String, String>, (usize, String)> {
    let mut vars = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (key, value) = line.split_once('=').ok_or_else(|| {
            (
                i + 1,
                "expected KEY=VALUE (a line without '=' is not a variable)".to_owned(),
            )
        })?;
        let key = key.trim();
        if !is_var_name(key) {
            return Err((i + 1, format!("{key:?} is not a variable name")));
        }
        let value = value.trim();
        let value = if value.len() >= 2
            && ((value.starts_with('"') && value.ends_with('"'))
                || (value.starts_with('\'') && value.ends_with('\'')))
        {
            value[1..value.len() - 1].to_owned()
        } else {
            // An unquoted value ends at an inline comment.
            value
                .split_once(" #")
                .map_or(value, |(v, _)| v)
                .trim()
                .to_owned()
        };
        vars.insert(key.to_owned(), value);
    }
    Ok(vars)
}

/// Warnings about where the credentials file is and who can read it.
fn file_warnings(path: &Path) -> Vec<String> {
    let mut warnings = Vec::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                warnings.push(format!(
                    "{} is readable by group or others (mode {:o}): run `chmod 600 {}`",
                    path.display(),
                    mode & 0o777,
                    path.display()
                ));
            }
        }
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let tracked = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["ls-files", "--error-unmatch", ENV_FILE])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if tracked {
        warnings.push(format!(
            "{} is tracked by git: its credentials are in the repository history. Remove it (`git rm --cached {ENV_FILE}`), add it to .gitignore, and rotate the credentials",
            path.display()
        ));
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_variables_and_records_missing_ones() {
        let (out, names) = expand_with(
            "a ${X} b ${MISSING} $$ $1 ${not valid} ${X:-d} ${UNSET:-60}m ${UNSET:-}",
            |n| (n == "X").then(|| "x".to_owned()),
        );
        assert_eq!(out, "a x b  $ $1 ${not valid} x 60m ");
        assert_eq!(
            names,
            vec![
                ("X".into(), true),
                ("MISSING".into(), false),
                ("X".into(), true),
                ("UNSET".into(), true),
                ("UNSET".into(), true),
            ]
        );
    }

    #[test]
    fn parses_the_runbooks_env_file() {
        let vars = parse_env_file(
            "# Load Balancer\nLB_PROVIDER=railway\nexport LB_API_KEY='k e y'\nPROMETHEUS_URL=https://p/api/v1 # prod\n\nEMPTY=\n",
        )
        .unwrap();
        assert_eq!(vars["LB_PROVIDER"], "railway");
        assert_eq!(vars["LB_API_KEY"], "k e y");
        assert_eq!(vars["PROMETHEUS_URL"], "https://p/api/v1");
        assert_eq!(vars["EMPTY"], "");
        assert_eq!(parse_env_file("JUST TEXT").unwrap_err().0, 1);
    }
}
