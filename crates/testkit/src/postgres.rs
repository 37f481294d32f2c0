//! A real PostgreSQL (Debian's `postgresql`) for the shared state store: `initdb` into a
//! temporary directory, `pg_ctl start` on a loopback port it picks, stopped on drop.
//!
//! The cluster has one superuser, [`USER`], whose TCP logins need [`PASSWORD`]
//! (`scram-sha-256`), so tests can try wrong credentials; the unix socket (inside the temporary
//! directory, trusted) is only for the harness's own `createdb`. Debian keeps the binaries in
//! `/usr/lib/postgresql/<version>/bin`; the newest version installed is used. `initdb` and the
//! server refuse to run as root: as root (CI), they run as the `postgres` user the package
//! creates (`runuser`), which is given the temporary directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::{free_port, wait_for};

/// The cluster's superuser.
pub const USER: &str = "canary";
/// [`USER`]'s password for TCP logins.
pub const PASSWORD: &str = "pg-Pa55-word-7f3c";
/// The database created at start, owned by [`USER`].
pub const DATABASE: &str = "canary";

/// A PostgreSQL server on 127.0.0.1, stopped (and its files removed) on drop.
pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    run_as: Option<String>,
    running: bool,
    dir: tempfile::TempDir,
}

impl Postgres {
    /// Initialises a cluster and starts it; returns once it accepts TCP connections and
    /// [`DATABASE`] exists.
    pub fn start() -> Postgres {
        let bin = binaries();
        let dir = tempfile::tempdir().expect("tempdir");
        let run_as = running_as_root().then(|| "postgres".to_owned());
        if let Some(user) = &run_as {
            give(dir.path(), user);
        }
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, PASSWORD).expect("write pwfile");
        if let Some(user) = &run_as {
            give(&pwfile, user);
        }
        let mut pg = Postgres {
            port: 0,
            bin,
            run_as,
            running: false,
            dir,
        };
        let data = pg.data();
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", USER, "-E", "UTF8", "--locale=C", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["--auth-host=scram-sha-256", "--auth-local=trust"])
            .output()
            .expect("run initdb");
        check("initdb", &out);
        let settings = format!(
            "\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n",
            pg.dir.path().display()
        );
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("read postgresql.conf");
        text.push_str(&settings);
        std::fs::write(&conf, text).expect("write postgresql.conf");
        for _attempt in 0..3 {
            pg.port = free_port();
            if pg.try_start() {
                let out = pg
                    .command("createdb")
                    .arg("-h")
                    .arg(pg.dir.path())
                    .args(["-p", &pg.port.to_string(), "-U", USER, DATABASE])
                    .output()
                    .expect("run createdb");
                check("createdb", &out);
                return pg;
            }
        }
        panic!(
            "postgres did not start after three attempts:\n{}",
            pg.output()
        );
    }

    /// `postgres://canary:PASSWORD@127.0.0.1:PORT/canary`.
    pub fn url(&self) -> String {
        self.url_for(USER, PASSWORD, DATABASE)
    }

    /// A URL with other credentials or another database (which may not exist).
    pub fn url_for(&self, user: &str, password: &str, database: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// Creates database `name` owned by [`USER`]; returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        let out = self
            .command("createdb")
            .arg("-h")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", USER, name])
            .output()
            .expect("run createdb");
        check("createdb", &out);
        self.url_for(USER, PASSWORD, name)
    }

    /// Stops the server (`pg_ctl stop -m fast`: sessions are ended, as when an administrator
    /// restarts it). [`Postgres::restart`] starts it again on the same port and data.
    pub fn stop(&mut self) {
        self.pg_ctl_stop("fast");
    }

    /// Starts a stopped server again, on the same port and data.
    pub fn restart(&mut self) {
        assert!(
            self.try_start(),
            "postgres did not start again on port {}:\n{}",
            self.port,
            self.output()
        );
    }

    /// The server's log so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// `pg_ctl start` on `self.port`, waiting until it accepts TCP connections; `false` when
    /// the port was taken meanwhile.
    fn try_start(&mut self) -> bool {
        let before = self.output().len();
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.log())
            .args(["-w", "-t", "60", "-o"])
            .arg(format!("-p {}", self.port))
            .arg("start")
            .output()
            .expect("run pg_ctl start");
        if !out.status.success() {
            let log = self.output();
            let log = log.get(before..).unwrap_or(&log);
            if log.contains("could not bind") || log.contains("already in use") {
                return false;
            }
            check("pg_ctl start", &out);
        }
        self.running = true;
        let port = self.port.to_string();
        wait_for(
            "postgres to accept TCP connections",
            Duration::from_secs(30),
            || {
                self.command("pg_isready")
                    .args(["-h", "127.0.0.1", "-p", &port, "-U", USER])
                    .output()
                    .ok()
                    .filter(|o| o.status.success())
            },
        );
        true
    }

    fn pg_ctl_stop(&mut self, mode: &str) {
        if !self.running {
            return;
        }
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", mode, "-w", "-t", "60", "stop"])
            .output()
            .expect("run pg_ctl stop");
        check("pg_ctl stop", &out);
        self.running = false;
    }

    /// `program` from the cluster's PostgreSQL version, as the user the server runs as.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(path);
                cmd
            }
            None => Command::new(path),
        };
        // The test's own directory may not be readable by the server's user.
        cmd.current_dir(self.dir.path());
        cmd
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "-t", "30", "stop"])
                .output();
        }
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin`.
fn binaries() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
        .unwrap_or_else(|| {
            panic!(
                "PostgreSQL is not installed ({}/<version>/bin/initdb): run scripts/test.sh --install",
                root.display()
            )
        })
}

fn running_as_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("run id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// Hands `path` to `user` (who must exist: Debian's package creates `postgres`).
fn give(path: &Path, user: &str) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, user])
            .output()
            .expect("run id");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| {
                panic!("no user {user:?} to run PostgreSQL as root: run scripts/test.sh --install")
            })
    };
    std::os::unix::fs::chown(path, Some(id("-u")), Some(id("-g")))
        .unwrap_or_else(|e| panic!("chown {} to {user}: {e}", path.display()));
}

fn check(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
