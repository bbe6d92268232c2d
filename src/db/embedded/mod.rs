//! A private PostgreSQL, started from the machine's server binaries when no
//! `DATABASE_URL` is given.
//!
//! Why not the `pgtemp` crate: it runs `initdb`/`postgres` as the current user and keeps
//! its data in a throw-away temp folder. As root that fails (PostgreSQL refuses to run as
//! root), and `cargo run` wants its data kept between runs. This module:
//!
//! - finds `initdb` and `postgres` on `PATH` or under `/usr/lib/postgresql/*/bin`;
//! - keeps the cluster in `<data dir>/pgdata`, created once by `initdb` with a generated
//!   password (stored beside it, readable by the owner only, whatever the umask);
//! - as root, runs both as the `postgres` user; if that user cannot reach the data folder
//!   (say a clone under a private home), it keeps the data under the temp folder instead,
//!   refusing a fallback folder that another user made;
//! - listens on 127.0.0.1 on a free port, with no Unix socket, so it never meets a system
//!   server;
//! - dies with us: the server gets SIGINT (fast shutdown) when the thread that started it
//!   ends, even if this process is killed with -9.

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{Pid, User};

mod folders;

use folders::{choose_root, fallback_root, refuse_foreign_dir, write_private};

/// How long to wait for the server to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Durability of the private server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// PostgreSQL defaults: every commit is flushed to disk.
    Durable,
    /// No fsync: for test suites, whose data is thrown away.
    Fast,
}

/// A running private PostgreSQL; [`EmbeddedPostgres::stop`] shuts it down.
pub struct EmbeddedPostgres {
    /// Folder holding `pgdata/`, the password and the server log.
    root: PathBuf,
    port: u16,
    password: String,
    pid: Pid,
    /// The thread that spawned the server and waits for it; the server's parent-death
    /// signal is tied to it.
    keeper: Option<JoinHandle<()>>,
}

impl EmbeddedPostgres {
    /// Starts (creating it on first use) the cluster kept under `data_dir`, on a free port.
    pub fn start(data_dir: &Path, durability: Durability) -> anyhow::Result<Self> {
        Self::start_on(data_dir, durability, None)
    }

    /// The same, on `port` if given (a test that stops and restarts its server keeps the
    /// URL its application holds).
    pub fn start_on(
        data_dir: &Path,
        durability: Durability,
        port: Option<u16>,
    ) -> anyhow::Result<Self> {
        let bin = find_bin_dir()?;
        let run_as = if nix::unistd::geteuid().is_root() {
            Some(User::from_name("postgres")?.context(
                "running as root, PostgreSQL must run as the `postgres` user, which does not exist \
                 (Debian: apt-get install postgresql creates it)",
            )?)
        } else {
            None
        };
        let root = choose_root(data_dir, run_as.as_ref())?;
        let pgdata = root.join("pgdata");
        let password = init_cluster(&bin, &root, &pgdata, run_as.as_ref())?;

        let started = Instant::now();
        loop {
            let port = match port {
                Some(port) => port,
                None => free_port()?,
            };
            let (pid, keeper, exited) =
                spawn_server(&bin, &root, &pgdata, port, durability, run_as.as_ref())?;
            match wait_ready(&pgdata, pid, &exited) {
                Ok(()) => {
                    return Ok(EmbeddedPostgres {
                        root,
                        port,
                        password,
                        pid,
                        keeper: Some(keeper),
                    });
                }
                Err(e) => {
                    let _ = kill(pid, Signal::SIGINT);
                    let _ = keeper.join();
                    let log = log_tail(&root);
                    // A server we were killed away from may still be shutting down and
                    // holding the lock on the data folder: give it time, then try again.
                    if log.contains("lock file") && started.elapsed() < START_TIMEOUT {
                        tracing::info!(
                            "an earlier private PostgreSQL still holds the data folder; waiting"
                        );
                        std::thread::sleep(Duration::from_millis(500));
                        continue;
                    }
                    return Err(e.context(format!(
                        "private PostgreSQL failed to start; end of {}:\n{log}",
                        root.join("postgres.log").display()
                    )));
                }
            }
        }
    }

    /// The URL of database `db` on a private server already running on `data_dir` (say,
    /// the one a serving flashsale started), if there is one.
    /// Creates nothing (a tool that only reads, like `flashsale audit`, must not leave an
    /// empty data folder behind).
    pub fn running_url(data_dir: &Path, db: &str) -> Option<String> {
        let root = Self::existing_cluster(data_dir)?;
        let pid_file = fs::read_to_string(root.join("pgdata").join("postmaster.pid")).ok()?;
        let lines: Vec<&str> = pid_file.lines().collect();
        let pid = Pid::from_raw(lines.first()?.trim().parse().ok()?);
        kill(pid, None).ok()?;
        let port: u16 = lines.get(3)?.trim().parse().ok()?;
        let password = fs::read_to_string(root.join("password")).ok()?;
        Some(format!(
            "postgres://postgres:{}@127.0.0.1:{port}/{db}",
            password.trim()
        ))
    }

    /// The folder holding the cluster that [`EmbeddedPostgres::start`] would use for
    /// `data_dir` (the data folder itself, or as root its fallback under the temp folder),
    /// if `initdb` has made one there; creates nothing.
    pub fn existing_cluster(data_dir: &Path) -> Option<PathBuf> {
        let root = data_dir.canonicalize().ok()?;
        let fallback = fallback_root(&root);
        // Anyone may create a folder under the shared temp folder: only one of ours counts.
        let ours = refuse_foreign_dir(&fallback).is_ok();
        std::iter::once(root)
            .chain(ours.then_some(fallback))
            .find(|dir| dir.join("pgdata").join("PG_VERSION").is_file())
    }

    /// Connection URL for database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{db}",
            self.password, self.port
        )
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The folder the server keeps its data in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Fast shutdown: running transactions are rolled back, committed data is safe.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(keeper) = self.keeper.take() {
            let _ = kill(self.pid, Signal::SIGINT);
            let _ = keeper.join();
        }
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn find_bin_dir() -> anyhow::Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut versioned: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .collect();
    versioned.sort_by_key(|v| std::cmp::Reverse(v.0));
    on_path
        .into_iter()
        .chain(versioned.into_iter().map(|(_, p)| p))
        .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
        .context(
            "PostgreSQL server binaries (initdb, postgres) were not found on PATH or under \
             /usr/lib/postgresql/*/bin. Install them (Debian/Ubuntu: apt-get install -y postgresql) \
             or set DATABASE_URL to a server you run yourself",
        )
}

/// Runs `initdb` once; returns the superuser password.
fn init_cluster(
    bin: &Path,
    root: &Path,
    pgdata: &Path,
    run_as: Option<&User>,
) -> anyhow::Result<String> {
    let password_file = root.join("password");
    if pgdata.join("PG_VERSION").is_file() {
        return Ok(fs::read_to_string(&password_file)
            .with_context(|| format!("Failed to read {}", password_file.display()))?
            .trim()
            .to_owned());
    }
    // A half-made cluster from an interrupted initdb is useless: start over.
    if pgdata.exists() {
        fs::remove_dir_all(pgdata)?;
    }
    let password = hex::encode(rand::random::<[u8; 16]>());
    write_private(&password_file, password.as_bytes())?;
    // initdb reads the password from a file the server's user can read (chowned to it
    // below); it goes away after.
    let pwfile = root.join("initdb.pw");
    write_private(&pwfile, password.as_bytes())?;
    fs::create_dir_all(pgdata)?;
    fs::set_permissions(pgdata, fs::Permissions::from_mode(0o700))?;
    if let Some(user) = run_as {
        nix::unistd::chown(pgdata, Some(user.uid), Some(user.gid))?;
        nix::unistd::chown(&pwfile, Some(user.uid), Some(user.gid))?;
    }
    let mut cmd = Command::new(bin.join("initdb"));
    cmd.arg("-D")
        .arg(pgdata)
        .args([
            "-U",
            "postgres",
            "-A",
            "scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ])
        .arg(format!("--pwfile={}", pwfile.display()))
        .stdout(Stdio::null());
    as_user(&mut cmd, run_as);
    let output = cmd.output().context("Failed to run initdb")?;
    let _ = fs::remove_file(&pwfile);
    if !output.status.success() {
        bail!("initdb failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(password)
}

fn log_tail(root: &Path) -> String {
    let log = fs::read_to_string(root.join("postgres.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

type Spawned = (Pid, JoinHandle<()>, mpsc::Receiver<()>);

fn spawn_server(
    bin: &Path,
    root: &Path,
    pgdata: &Path,
    port: u16,
    durability: Durability,
    run_as: Option<&User>,
) -> anyhow::Result<Spawned> {
    // The log can name users and queries: the owner's only.
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(root.join("postgres.log"))?;
    log.set_permissions(fs::Permissions::from_mode(0o600))?;
    let mut cmd = Command::new(bin.join("postgres"));
    cmd.arg("-D")
        .arg(pgdata)
        .args(["-p", &port.to_string()])
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=",
        ])
        .args(["-c", "max_connections=300"])
        // Sized for a write-heavy sale on a small machine rather than PostgreSQL's
        // conservative defaults: room for the hot indexes in memory, a WAL buffer that
        // holds several batches, and checkpoints far enough apart that a sale does not
        // pay full-page images and new WAL segments again and again.
        .args([
            "-c",
            "shared_buffers=256MB",
            "-c",
            "wal_buffers=32MB",
            "-c",
            "max_wal_size=4GB",
            "-c",
            "min_wal_size=1GB",
            "-c",
            "checkpoint_timeout=15min",
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if durability == Durability::Fast {
        cmd.args([
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ]);
    }
    as_user(&mut cmd, run_as);
    let (pid_tx, pid_rx) = mpsc::channel();
    let (exit_tx, exit_rx) = mpsc::channel();
    // The parent-death signal fires when the *thread* that forked the child ends, so the
    // server is spawned from a thread that lives exactly as long as the server does.
    let keeper = std::thread::Builder::new()
        .name("postgres-keeper".into())
        .spawn(move || {
            match cmd.spawn() {
                Ok(mut child) => {
                    let _ = pid_tx.send(Ok(child.id()));
                    let _ = child.wait();
                }
                Err(e) => {
                    let _ = pid_tx.send(Err(e));
                }
            }
            let _ = exit_tx.send(());
        })?;
    let pid = pid_rx.recv()?.context("Failed to start postgres")?;
    Ok((Pid::from_raw(pid as i32), keeper, exit_rx))
}

/// Waits until `postmaster.pid` names our server and says "ready".
fn wait_ready(pgdata: &Path, pid: Pid, exited: &mpsc::Receiver<()>) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(lines) = fs::read_to_string(pgdata.join("postmaster.pid")) {
            let lines: Vec<&str> = lines.lines().collect();
            if lines.first() == Some(&pid.to_string().as_str())
                && lines.get(7).map(|s| s.trim()) == Some("ready")
            {
                return Ok(());
            }
        }
        match exited.recv_timeout(Duration::from_millis(50)) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Let start() see the exit too.
                bail!("postgres exited during start-up");
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    bail!("postgres did not become ready within {START_TIMEOUT:?}")
}

/// As root: run `cmd` as `user`, and have it receive SIGINT when its parent thread ends.
fn as_user(cmd: &mut Command, user: Option<&User>) {
    let ids = user.map(|u| (u.uid, u.gid));
    #[allow(unsafe_code)]
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe system calls (setgroups, setgid, setuid, prctl).
    unsafe {
        cmd.pre_exec(move || {
            if let Some((uid, gid)) = ids {
                nix::unistd::setgroups(&[gid])?;
                nix::unistd::setgid(gid)?;
                nix::unistd::setuid(uid)?;
            }
            // After setuid: changing credentials clears the parent-death signal.
            nix::sys::prctl::set_pdeathsig(Signal::SIGINT)?;
            Ok(())
        });
    }
}
