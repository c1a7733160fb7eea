//! A real `nats-server` with JetStream for tests and examples: started on a free loopback
//! port with its storage in a fresh temporary directory, stopped (and the directory removed)
//! when dropped. Nothing is mocked.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How to get the server where it is missing.
pub const INSTALL_HINT: &str = "nats-server not found: install it (Debian/Ubuntu: \
    `apt-get install nats-server`) or put it on PATH";

/// A running `nats-server -js` (see the module docs).
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
}

impl NatsServer {
    /// Starts a server on a free loopback port; an error says how to install it if missing.
    pub fn start() -> Result<NatsServer> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| failed(format!("no free port: {e}")))?
            .port();
        let store =
            std::env::temp_dir().join(format!("wgpu-batch-nats-{}-{port}", std::process::id()));
        let mut server = NatsServer {
            child: None,
            port,
            store,
        };
        server.launch()?;
        Ok(server)
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL: what a crash does) and starts it again on the same port
    /// and storage, which it recovers from.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.launch()
    }

    fn launch(&mut self) -> Result<()> {
        let child = Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => failed(INSTALL_HINT),
                _ => failed(format!("could not start nats-server: {e}")),
            })?;
        self.child = Some(child);
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if start.elapsed() > Duration::from_secs(10) {
                return Err(failed("nats-server did not listen within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

fn failed(message: impl Into<String>) -> Error {
    Error::Remote {
        code: super::NATS_FAILURE,
        message: message.into(),
    }
}
