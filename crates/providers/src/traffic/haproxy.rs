//! The `haproxy` router: HAProxy's runtime API over a unix socket or TCP — `set weight` to
//! change the split, `show servers state` to read it back.
//!
//! The canary's percentage maps onto HAProxy's 0–256 weight scale as the pair
//! `canary = pct`, `baseline = 100 - pct`: both fit the scale, and their ratio is exactly the
//! percentage (a weight of 0 takes a server out of rotation). The split read back is the
//! ratio of the two servers' effective weights: a server in maintenance or drain counts as 0.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::{BoxFuture, Split, TrafficError, TrafficRouter};

const ROUTER: &str = "haproxy";
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// `srv_admin_state` bits for forced/inherited/config/resolver/hostname maintenance and drain:
/// a server with any of them set takes no new traffic.
const OUT_OF_ROTATION: u32 = 0x7f;

/// Where HAProxy's runtime API listens (`stats socket ... level admin`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HaproxyEndpoint {
    /// A unix socket path.
    Unix(PathBuf),
    /// `host:port`.
    Tcp(String),
}

impl FromStr for HaproxyEndpoint {
    type Err = TrafficError;

    /// `unix:/run/haproxy/admin.sock` or `/run/haproxy/admin.sock` → unix socket;
    /// `tcp:127.0.0.1:9999` or `127.0.0.1:9999` → TCP.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            return Ok(HaproxyEndpoint::Unix(path.into()));
        }
        if s.starts_with('/') || s.starts_with('.') {
            return Ok(HaproxyEndpoint::Unix(s.into()));
        }
        let addr = s.strip_prefix("tcp:").unwrap_or(s);
        if addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        {
            Ok(HaproxyEndpoint::Tcp(addr.to_owned()))
        } else {
            Err(TrafficError::Config {
                router: ROUTER,
                reason: format!(
                    "endpoint `{s}` is neither a socket path nor host:port: give /run/haproxy/admin.sock or 127.0.0.1:9999"
                ),
            })
        }
    }
}

impl fmt::Display for HaproxyEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HaproxyEndpoint::Unix(path) => write!(f, "unix:{}", path.display()),
            HaproxyEndpoint::Tcp(addr) => write!(f, "tcp:{addr}"),
        }
    }
}

/// Configuration of the `haproxy` router: one backend with one canary and one baseline server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HaproxyConfig {
    /// The runtime API (needs `level admin`).
    pub endpoint: HaproxyEndpoint,
    /// The backend that holds both servers (`balance roundrobin` or another dynamic algorithm).
    pub backend: String,
    /// The canary's server name in that backend.
    pub canary_server: String,
    /// The baseline's server name in that backend.
    pub baseline_server: String,
}

/// The `haproxy` router.
#[derive(Debug)]
pub struct HaproxyRouter {
    cfg: HaproxyConfig,
}

/// One server's line of `show servers state`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ServerState {
    addr: String,
    op_state: u32,
    admin_state: u32,
    weight: u64,
}

impl ServerState {
    fn effective_weight(&self) -> u64 {
        if self.admin_state & OUT_OF_ROTATION != 0 {
            0
        } else {
            self.weight
        }
    }

    fn describe(&self) -> String {
        let op = match self.op_state {
            0 => "down",
            1 => "starting",
            2 => "up",
            3 => "stopping",
            _ => "unknown",
        };
        let admin = if self.admin_state & 0x67 != 0 {
            "maintenance"
        } else if self.admin_state & 0x18 != 0 {
            "drain"
        } else {
            "ready"
        };
        format!("{} weight {} {op} {admin}", self.addr, self.weight)
    }
}

impl HaproxyRouter {
    /// Checks the names: they go into runtime API commands, so only
    /// `[A-Za-z0-9_.:-]` is accepted.
    pub fn new(cfg: HaproxyConfig) -> Result<Self, TrafficError> {
        for (what, name) in [
            ("backend", &cfg.backend),
            ("canary_server", &cfg.canary_server),
            ("baseline_server", &cfg.baseline_server),
        ] {
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'));
            if !ok {
                return Err(TrafficError::Config {
                    router: ROUTER,
                    reason: format!(
                        "{what} `{name}` is not a HAProxy name: use letters, digits, `_`, `.`, `:`, `-`"
                    ),
                });
            }
        }
        if cfg.canary_server == cfg.baseline_server {
            return Err(TrafficError::Config {
                router: ROUTER,
                reason: "canary_server and baseline_server are the same server".into(),
            });
        }
        Ok(HaproxyRouter { cfg })
    }

    /// Sends one command line and returns everything HAProxy answered.
    async fn exchange(&self, command: &str) -> Result<String, TrafficError> {
        let endpoint = self.cfg.endpoint.to_string();
        let work = async {
            let line = format!("{command}\n");
            let mut answer = Vec::new();
            match &self.cfg.endpoint {
                HaproxyEndpoint::Unix(path) => {
                    let mut s = UnixStream::connect(path).await?;
                    s.write_all(line.as_bytes()).await?;
                    s.read_to_end(&mut answer).await?;
                }
                HaproxyEndpoint::Tcp(addr) => {
                    let mut s = TcpStream::connect(addr).await?;
                    s.write_all(line.as_bytes()).await?;
                    s.read_to_end(&mut answer).await?;
                }
            }
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).into_owned())
        };
        match tokio::time::timeout(EXCHANGE_TIMEOUT, work).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(err)) => Err(TrafficError::Unreachable {
                router: ROUTER,
                endpoint,
                reason: format!("{err} (is `stats socket ... level admin` configured there?)"),
            }),
            Err(_) => Err(TrafficError::Timeout {
                router: ROUTER,
                what: format!("`{command}` on {endpoint}"),
                after: EXCHANGE_TIMEOUT,
            }),
        }
    }

    /// Both servers' state: (baseline, canary).
    async fn servers(&self) -> Result<(ServerState, ServerState), TrafficError> {
        let command = format!("show servers state {}", self.cfg.backend);
        let answer = self.exchange(&command).await?;
        let table = parse_servers_state(&answer, &self.cfg.backend).map_err(|detail| {
            TrafficError::Unreadable {
                router: ROUTER,
                what: format!("`{command}`"),
                detail,
            }
        })?;
        let find = |name: &str| {
            table
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, s)| s.clone())
                .ok_or_else(|| TrafficError::Unreadable {
                    router: ROUTER,
                    what: format!("`{command}`"),
                    detail: format!(
                        "backend `{}` has no server `{name}` (servers: {})",
                        self.cfg.backend,
                        table
                            .iter()
                            .map(|(n, _)| n.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })
        };
        Ok((
            find(&self.cfg.baseline_server)?,
            find(&self.cfg.canary_server)?,
        ))
    }
}

/// Parses `show servers state` into (server name, state) for `backend`. The answer is a
/// version line, a `# `-prefixed header naming the columns, then one line per server.
fn parse_servers_state(answer: &str, backend: &str) -> Result<Vec<(String, ServerState)>, String> {
    let mut lines = answer.lines().map(str::trim).filter(|l| !l.is_empty());
    let version = lines.next().ok_or("empty answer")?;
    if version != "1" {
        return Err(format!(
            "unexpected answer `{version}` (expected format version 1)"
        ));
    }
    let header: Vec<&str> = lines
        .next()
        .and_then(|h| h.strip_prefix('#'))
        .ok_or("no column header")?
        .split_whitespace()
        .collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| format!("no column `{name}` in the header"))
    };
    let (be, name, addr, op, admin, weight) = (
        column("be_name")?,
        column("srv_name")?,
        column("srv_addr")?,
        column("srv_op_state")?,
        column("srv_admin_state")?,
        column("srv_uweight")?,
    );
    let mut servers = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let field = |i: usize| {
            fields
                .get(i)
                .copied()
                .ok_or_else(|| format!("short line `{line}`"))
        };
        let number = |i: usize| -> Result<u64, String> {
            field(i)?
                .parse()
                .map_err(|_| format!("column {} is not a number in `{line}`", header[i]))
        };
        if field(be)? != backend {
            continue;
        }
        let state = ServerState {
            addr: field(addr)?.to_owned(),
            op_state: u32::try_from(number(op)?).unwrap_or(u32::MAX),
            admin_state: u32::try_from(number(admin)?).unwrap_or(u32::MAX),
            weight: number(weight)?,
        };
        servers.push((field(name)?.to_owned(), state));
    }
    Ok(servers)
}

impl TrafficRouter for HaproxyRouter {
    fn name(&self) -> &'static str {
        ROUTER
    }

    fn set(&self, canary_pct: u8) -> BoxFuture<'_, Result<(), TrafficError>> {
        Box::pin(async move {
            let split = Split::with_canary(canary_pct)?;
            let be = &self.cfg.backend;
            // One line, two commands: HAProxy runs both before reading anything else from us.
            let canary_cmd = format!(
                "set weight {be}/{} {}",
                self.cfg.canary_server, split.canary
            );
            let baseline_cmd = format!(
                "set weight {be}/{} {}",
                self.cfg.baseline_server, split.baseline
            );
            let command = format!("{canary_cmd}; {baseline_cmd}");
            let answer = self.exchange(&command).await?;
            if answer.trim().is_empty() {
                Ok(())
            } else {
                Err(TrafficError::Rejected {
                    router: ROUTER,
                    what: format!("`{command}`"),
                    detail: answer.trim().to_owned(),
                })
            }
        })
    }

    fn get(&self) -> BoxFuture<'_, Result<Split, TrafficError>> {
        Box::pin(async move {
            let (baseline, canary) = self.servers().await?;
            Split::from_weights(canary.effective_weight(), baseline.effective_weight()).ok_or_else(
                || TrafficError::Unreadable {
                    router: ROUTER,
                    what: format!("backend `{}`", self.cfg.backend),
                    detail: "both servers have weight 0 or are in maintenance: no traffic flows"
                        .into(),
                },
            )
        })
    }

    fn describe(&self) -> BoxFuture<'_, Result<String, TrafficError>> {
        Box::pin(async move {
            let (baseline, canary) = self.servers().await?;
            let split = Split::from_weights(canary.effective_weight(), baseline.effective_weight())
                .map_or_else(|| "no traffic flows".to_owned(), |s| s.to_string());
            Ok(format!(
                "haproxy {} backend {}\nbaseline server {}: {}\ncanary   server {}: {}\nsplit: {split}\n",
                self.cfg.endpoint,
                self.cfg.backend,
                self.cfg.baseline_server,
                baseline.describe(),
                self.cfg.canary_server,
                canary.describe(),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: &str = "1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
3 app 1 baseline 127.0.0.1 2 0 95 100 12 1 0 0 0 0 0 0 - 8081 - 0 0 - - 0
3 app 2 canary 127.0.0.1 2 1 5 0 12 1 0 0 0 0 0 0 - 8082 - 0 0 - - 0
4 other 1 canary 127.0.0.1 2 0 7 7 12 1 0 0 0 0 0 0 - 8083 - 0 0 - - 0

";

    #[test]
    fn servers_state_is_read_by_column_name() {
        let servers = parse_servers_state(STATE, "app").unwrap();
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].0, "baseline");
        assert_eq!(servers[0].1.weight, 95);
        assert_eq!(servers[0].1.effective_weight(), 95);
        // In forced maintenance: no traffic whatever its weight.
        assert_eq!(servers[1].1.weight, 5);
        assert_eq!(servers[1].1.effective_weight(), 0);
        assert!(servers[1].1.describe().contains("maintenance"));
        assert!(parse_servers_state("Unknown command\n", "app").is_err());
    }

    #[test]
    fn endpoints_parse_and_names_are_checked() {
        assert_eq!(
            "/run/haproxy.sock".parse::<HaproxyEndpoint>().unwrap(),
            HaproxyEndpoint::Unix("/run/haproxy.sock".into())
        );
        assert_eq!(
            "tcp:127.0.0.1:9999".parse::<HaproxyEndpoint>().unwrap(),
            HaproxyEndpoint::Tcp("127.0.0.1:9999".into())
        );
        assert!("haproxy".parse::<HaproxyEndpoint>().is_err());
        let cfg = HaproxyConfig {
            endpoint: HaproxyEndpoint::Tcp("127.0.0.1:1".into()),
            backend: "app; disable server app/baseline".into(),
            canary_server: "c".into(),
            baseline_server: "b".into(),
        };
        assert!(
            HaproxyRouter::new(cfg)
                .unwrap_err()
                .to_string()
                .contains("not a HAProxy name")
        );
    }
}
