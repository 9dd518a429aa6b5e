//! The `airbag` binary as a child process for the tests that run it:
//! `airbag serve` from a config file (waited for until it listens) and the
//! client commands (waited for, bounded). Every child is killed when its
//! guard drops.
#![allow(dead_code)]

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn airbag() -> Command {
    Command::new(env!("CARGO_BIN_EXE_airbag"))
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// A child process, killed on drop.
pub struct Guard(pub Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Guard {
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("a running child")
    }

    pub fn pid(&self) -> u32 {
        self.0.as_ref().expect("a running child").id()
    }

    /// SIGKILL, and reaped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to `limit` for the exit; whether it was clean.
    pub fn terminate(&mut self, limit: Duration) -> bool {
        let Some(child) = self.0.as_mut() else { return false };
        // SAFETY: kill(2) on a pid we spawned and have not reaped; no memory involved.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.0 = None;
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Waits at most `limit` for the exit; the status and what it wrote.
    pub fn finish(mut self, limit: Duration, what: &str) -> Output {
        let deadline = Instant::now() + limit;
        loop {
            match self.child().try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Ok(None) => panic!("{what} did not exit within {limit:?}"),
                Err(e) => panic!("waiting for {what}: {e}"),
            }
        }
        let child = self.0.take().expect("a running child");
        child.wait_with_output().expect("output")
    }
}

/// Runs a client command to its end (at most `limit`), capturing output.
pub fn run(args: &[&str], limit: Duration) -> Output {
    let child = airbag()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn airbag");
    Guard(Some(child)).finish(limit, &format!("airbag {}", args.join(" ")))
}

/// Starts a client command in the background, stdout to `out`, stderr to
/// `out` + `.err`.
pub fn spawn_to(args: &[&str], out: &Path) -> Guard {
    let child = airbag()
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(out).expect("output file"))
        .stderr(File::create(out.with_extension("err")).expect("stderr file"))
        .spawn()
        .expect("spawn airbag");
    Guard(Some(child))
}

/// `airbag serve --config FILE`, its log in `log`.
pub struct Serve {
    pub process: Guard,
    pub port: u16,
    pub log: PathBuf,
}

impl Serve {
    /// Starts the server and waits (at most 20 s) until gRPC listens on
    /// `port` (the config's `listen`).
    pub fn start(config: &Path, port: u16, log: PathBuf) -> Serve {
        let child = airbag()
            .arg("serve")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn airbag serve");
        let mut serve = Serve {
            process: Guard(Some(child)),
            port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = serve.process.child().try_wait() {
                panic!("airbag serve exited with {status}:\n{}", serve.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "airbag serve did not listen within 20 s:\n{}",
                serve.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        serve
    }

    pub fn addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Every instrument's last applied sequence number, or `None` if the
/// server does not answer.
pub async fn last_applied(port: u16) -> Option<std::collections::HashMap<String, u64>> {
    let mut client = airbag::wire::proto::ingest_client::IngestClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .ok()?;
    let response = client
        .last_applied(airbag::wire::proto::LastAppliedRequest::default())
        .await
        .ok()?
        .into_inner();
    Some(
        response
            .last_applied
            .into_iter()
            .map(|p| (p.instrument, p.seq))
            .collect(),
    )
}
