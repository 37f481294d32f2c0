//! A real SMTP server (Python's aiosmtpd, installed by `scripts/test.sh`) on loopback, requiring
//! AUTH as a relay would, writing every message it accepts as a JSON line to a file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{Process, free_port, wait_for};

/// The login the server accepts.
pub const LOGIN: &str = "canary";
/// The password the server accepts.
pub const PASSWORD: &str = "smtp-pa55";

const SERVER: &str = r#"
import json, sys, threading
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

port, out, login, password = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode(), sys.argv[4].encode()

class Handler:
    async def handle_DATA(self, server, session, envelope):
        with open(out, "a") as f:
            f.write(json.dumps({"from": envelope.mail_from, "to": envelope.rcpt_tos,
                                "data": envelope.content.decode("utf8", "replace")}) + "\n")
        return "250 OK"

def authenticate(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == login \
        and auth_data.password == password
    return AuthResult(success=ok, handled=False)

controller = Controller(Handler(), hostname="127.0.0.1", port=port, authenticator=authenticate,
                        auth_required=True, auth_require_tls=False)
controller.start()
print("smtp ready", flush=True)
threading.Event().wait()
"#;

/// aiosmtpd requiring AUTH ([`LOGIN`] / [`PASSWORD`], allowed without TLS on loopback), killed
/// on drop.
pub struct Smtp {
    pub port: u16,
    received: PathBuf,
    _process: Process,
    _dir: Option<tempfile::TempDir>,
}

impl Smtp {
    /// Starts the server in a temporary directory.
    pub fn start() -> Smtp {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut smtp = Smtp::start_in(dir.path());
        smtp._dir = Some(dir);
        smtp
    }

    /// Starts the server with its script, log and received messages in `dir`.
    pub fn start_in(dir: &Path) -> Smtp {
        let script = dir.join("smtp_server.py");
        std::fs::write(&script, SERVER).expect("write the SMTP server script");
        let received = dir.join("smtp-received.jsonl");
        let port = free_port();
        let mut cmd = Command::new("python3");
        cmd.arg(&script)
            .arg(port.to_string())
            .arg(&received)
            .arg(LOGIN)
            .arg(PASSWORD);
        let mut process = Process::spawn("aiosmtpd", dir, cmd);
        wait_for("aiosmtpd to listen", Duration::from_secs(30), || {
            process.assert_running();
            process.output().contains("smtp ready").then_some(())
        });
        Smtp {
            port,
            received,
            _process: process,
            _dir: None,
        }
    }

    /// Every message accepted so far: `{"from", "to", "data"}`.
    pub fn messages(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.received)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}
