//! The `nginx` router: rewrites an upstream include file with the two servers' weights
//! (0 % = `down`), checks it with the test command (`nginx -t`), reloads, and reads the file
//! back. A file the test or the reload rejects is replaced by the previous one at once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::process::Shell;
use super::{BoxFuture, Split, TrafficError, TrafficRouter};

const ROUTER: &str = "nginx";
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Configuration of the `nginx` router.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NginxConfig {
    /// The file `canary` owns, included from nginx's `http` block, holding
    /// `upstream <upstream_name> { server <baseline_addr> ...; server <canary_addr> ...; }`.
    /// Created if missing; in an existing file only those two `server` lines are rewritten.
    pub upstream_file: PathBuf,
    /// The upstream block's name (what `proxy_pass http://<name>` uses).
    pub upstream_name: String,
    /// The canary's `host:port` as written in the `server` line.
    pub canary_addr: String,
    /// The baseline's `host:port` as written in the `server` line.
    pub baseline_addr: String,
    /// Checks the configuration, such as `nginx -t`; run with `sh -c`.
    pub test_command: String,
    /// Applies it, such as `nginx -s reload` or `systemctl reload nginx`; run with `sh -c`.
    pub reload_command: String,
}

/// The `nginx` router.
#[derive(Debug)]
pub struct NginxRouter {
    cfg: NginxConfig,
}

impl NginxRouter {
    /// Checks the names (they are written into nginx syntax).
    pub fn new(cfg: NginxConfig) -> Result<Self, TrafficError> {
        for (what, value) in [
            ("upstream_name", &cfg.upstream_name),
            ("canary_addr", &cfg.canary_addr),
            ("baseline_addr", &cfg.baseline_addr),
        ] {
            if value.is_empty()
                || value
                    .chars()
                    .any(|c| c.is_whitespace() || matches!(c, ';' | '{' | '}' | '#'))
            {
                return Err(TrafficError::Config {
                    router: ROUTER,
                    reason: format!(
                        "{what} `{value}` cannot be written into an nginx file: no spaces, `;`, braces or `#`"
                    ),
                });
            }
        }
        if cfg.canary_addr == cfg.baseline_addr {
            return Err(TrafficError::Config {
                router: ROUTER,
                reason: "canary_addr and baseline_addr are the same address".into(),
            });
        }
        Ok(NginxRouter { cfg })
    }

    fn shell(&self) -> Shell<'static> {
        Shell {
            router: ROUTER,
            timeout: COMMAND_TIMEOUT,
            env: &[],
        }
    }

    async fn read(&self) -> Result<Option<String>, TrafficError> {
        match tokio::fs::read_to_string(&self.cfg.upstream_file).await {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(TrafficError::Io {
                router: ROUTER,
                what: format!("reading {}", self.cfg.upstream_file.display()),
                source,
            }),
        }
    }

    /// Replaces the file atomically (write beside it, then rename over it).
    async fn write(&self, text: &str) -> Result<(), TrafficError> {
        let path = &self.cfg.upstream_file;
        let staged = staged_path(path);
        let io = |what: String| {
            move |source| TrafficError::Io {
                router: ROUTER,
                what,
                source,
            }
        };
        tokio::fs::write(&staged, text)
            .await
            .map_err(io(format!("writing {}", staged.display())))?;
        tokio::fs::rename(&staged, path)
            .await
            .map_err(io(format!("replacing {}", path.display())))
    }

    /// Puts the previous file back (or removes a file that did not exist before).
    async fn restore(&self, previous: Option<&str>) {
        let result = match previous {
            Some(text) => self.write(text).await,
            None => tokio::fs::remove_file(&self.cfg.upstream_file)
                .await
                .map_err(|source| TrafficError::Io {
                    router: ROUTER,
                    what: format!("removing {}", self.cfg.upstream_file.display()),
                    source,
                }),
        };
        match result {
            Ok(()) => {
                tracing::warn!(file = %self.cfg.upstream_file.display(), "rejected upstream file replaced by the previous one")
            }
            Err(err) => {
                tracing::error!(error = %err, "could not restore the previous upstream file: nginx -t will fail until it is fixed")
            }
        }
    }

    fn parse(&self, text: &str) -> Result<Split, TrafficError> {
        let unreadable = |detail: String| TrafficError::Unreadable {
            router: ROUTER,
            what: self.cfg.upstream_file.display().to_string(),
            detail,
        };
        let servers = servers_in_upstream(text, &self.cfg.upstream_name).ok_or_else(|| {
            unreadable(format!(
                "no `upstream {} {{ ... }}` block",
                self.cfg.upstream_name
            ))
        })?;
        let find = |addr: &str| {
            servers.iter().find(|s| s.addr == addr).ok_or_else(|| {
                unreadable(format!(
                    "upstream {} has no `server {addr}` line",
                    self.cfg.upstream_name
                ))
            })
        };
        let canary = find(&self.cfg.canary_addr)?;
        let baseline = find(&self.cfg.baseline_addr)?;
        Split::from_weights(canary.effective_weight(), baseline.effective_weight())
            .ok_or_else(|| unreadable("both servers are `down`: no traffic flows".into()))
    }

    /// The new file: the two `server` lines rewritten in place, or a fresh file.
    fn render(&self, previous: Option<&str>, split: Split) -> String {
        let line = |addr: &str, pct: u8| {
            if pct == 0 {
                format!("server {addr} down;")
            } else {
                format!("server {addr} weight={pct};")
            }
        };
        let canary_line = line(&self.cfg.canary_addr, split.canary);
        let baseline_line = line(&self.cfg.baseline_addr, split.baseline);
        if let Some(text) = previous
            && let Some(rewritten) = rewrite_servers(
                text,
                &self.cfg.upstream_name,
                &[
                    (&self.cfg.canary_addr, &canary_line),
                    (&self.cfg.baseline_addr, &baseline_line),
                ],
            )
        {
            return rewritten;
        }
        format!(
            "# Managed by canary: rewritten on every traffic change.\nupstream {} {{\n    {baseline_line}\n    {canary_line}\n}}\n",
            self.cfg.upstream_name
        )
    }
}

fn staged_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".canary-new");
    path.with_file_name(name)
}

/// One `server` line of an upstream block.
#[derive(Debug, PartialEq, Eq)]
struct ServerLine {
    addr: String,
    weight: u64,
    down: bool,
}

impl ServerLine {
    fn effective_weight(&self) -> u64 {
        if self.down { 0 } else { self.weight }
    }
}

/// The `server` lines of `upstream <name> { ... }` (one directive per line, as `canary`
/// writes them), or `None` if there is no such block.
fn servers_in_upstream(text: &str, name: &str) -> Option<Vec<ServerLine>> {
    let mut inside = false;
    let mut found = false;
    let mut servers = Vec::new();
    for raw in text.lines() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if !inside {
            let mut words = line.split_whitespace();
            if words.next() == Some("upstream")
                && words.next().map(|w| w.trim_end_matches('{')) == Some(name)
            {
                inside = true;
                found = true;
            }
            continue;
        }
        if line.starts_with('}') {
            inside = false;
            continue;
        }
        let mut words = line.trim_end_matches(';').split_whitespace();
        if words.next() != Some("server") {
            continue;
        }
        let Some(addr) = words.next() else { continue };
        let mut server = ServerLine {
            addr: addr.to_owned(),
            weight: 1,
            down: false,
        };
        for param in words {
            if param == "down" {
                server.down = true;
            } else if let Some(w) = param.strip_prefix("weight=") {
                server.weight = w.parse().unwrap_or(0);
            }
        }
        servers.push(server);
    }
    found.then_some(servers)
}

/// `text` with the `server <addr>` lines of upstream `name` replaced, indentation and every
/// other line kept; `None` unless every address had exactly one line to replace.
fn rewrite_servers(text: &str, name: &str, replacements: &[(&str, &str)]) -> Option<String> {
    let mut inside = false;
    let mut replaced = vec![0usize; replacements.len()];
    let mut out = String::with_capacity(text.len());
    for raw in text.split_inclusive('\n') {
        let code = raw.split('#').next().unwrap_or("").trim();
        let mut line = raw.to_owned();
        if !inside {
            let mut words = code.split_whitespace();
            if words.next() == Some("upstream")
                && words.next().map(|w| w.trim_end_matches('{')) == Some(name)
            {
                inside = true;
            }
        } else if code.starts_with('}') {
            inside = false;
        } else {
            let mut words = code.trim_end_matches(';').split_whitespace();
            if words.next() == Some("server")
                && let Some(addr) = words.next()
                && let Some(i) = replacements.iter().position(|(a, _)| *a == addr)
            {
                let indent: String = raw.chars().take_while(|c| c.is_whitespace()).collect();
                let newline = if raw.ends_with('\n') { "\n" } else { "" };
                line = format!("{indent}{}{newline}", replacements[i].1);
                replaced[i] += 1;
            }
        }
        out.push_str(&line);
    }
    replaced.iter().all(|&n| n == 1).then_some(out)
}

impl TrafficRouter for NginxRouter {
    fn name(&self) -> &'static str {
        ROUTER
    }

    fn set(&self, canary_pct: u8) -> BoxFuture<'_, Result<(), TrafficError>> {
        Box::pin(async move {
            let split = Split::with_canary(canary_pct)?;
            let previous = self.read().await?;
            let next = self.render(previous.as_deref(), split);
            self.write(&next).await?;
            let shell = self.shell();
            if let Err(err) = shell.run(&self.cfg.test_command).await {
                self.restore(previous.as_deref()).await;
                return Err(err);
            }
            if let Err(err) = shell.run(&self.cfg.reload_command).await {
                self.restore(previous.as_deref()).await;
                return Err(err);
            }
            tracing::info!(file = %self.cfg.upstream_file.display(), canary = split.canary, "nginx upstream rewritten and reloaded");
            Ok(())
        })
    }

    fn get(&self) -> BoxFuture<'_, Result<Split, TrafficError>> {
        Box::pin(async move {
            let text = self.read().await?.ok_or_else(|| TrafficError::Unreadable {
                router: ROUTER,
                what: self.cfg.upstream_file.display().to_string(),
                detail: "the file does not exist (canary has not set a split yet)".into(),
            })?;
            self.parse(&text)
        })
    }

    fn describe(&self) -> BoxFuture<'_, Result<String, TrafficError>> {
        Box::pin(async move {
            let text = self
                .read()
                .await?
                .unwrap_or_else(|| "(file does not exist)\n".into());
            let split = self
                .parse(&text)
                .map_or_else(|e| format!("unreadable: {e}"), |s| s.to_string());
            Ok(format!(
                "nginx upstream file {}\nsplit: {split}\n{text}",
                self.cfg.upstream_file.display()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> NginxRouter {
        NginxRouter::new(NginxConfig {
            upstream_file: "/tmp/x.conf".into(),
            upstream_name: "relay".into(),
            canary_addr: "127.0.0.1:8082".into(),
            baseline_addr: "127.0.0.1:8081".into(),
            test_command: "true".into(),
            reload_command: "true".into(),
        })
        .unwrap()
    }

    #[test]
    fn rendered_files_read_back_as_the_split() {
        let r = router();
        for pct in [0, 5, 50, 99, 100] {
            let split = Split::with_canary(pct).unwrap();
            let fresh = r.render(None, split);
            assert_eq!(r.parse(&fresh).unwrap(), split, "{fresh}");
            let again = r.render(Some(&fresh), Split::with_canary(100 - pct).unwrap());
            assert_eq!(r.parse(&again).unwrap().canary, 100 - pct);
        }
        assert!(
            r.render(None, Split::with_canary(0).unwrap())
                .contains("server 127.0.0.1:8082 down;")
        );
    }

    #[test]
    fn rewriting_keeps_the_operators_other_lines() {
        let r = router();
        let text = "upstream relay {\n  keepalive 32;\n  server 127.0.0.1:8081 weight=90 max_fails=3;\n  server 127.0.0.1:8082 weight=10;\n}\nupstream other {\n  server 127.0.0.1:8082;\n}\n";
        let out = r.render(Some(text), Split::with_canary(5).unwrap());
        assert!(out.contains("  keepalive 32;\n"));
        assert!(out.contains("  server 127.0.0.1:8081 weight=95;\n"));
        assert!(out.contains("upstream other {\n  server 127.0.0.1:8082;\n}"));
        assert_eq!(r.parse(&out).unwrap().canary, 5);
        // Default weight is 1; `down` is 0.
        let manual = "upstream relay {\n server 127.0.0.1:8081;\n server 127.0.0.1:8082 down;\n}\n";
        assert_eq!(r.parse(manual).unwrap().canary, 0);
        assert!(r.parse("upstream nope {}\n").is_err());
    }
}
