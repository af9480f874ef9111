//! Where a CLI command sends its requests: `--server URL`, the server that owns the data dir, or
//! an in-process server this command starts on a private loopback port for its own duration.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;

use super::{Cli, runtime};
use crate::app::{self, App};
use crate::client::Client;
use crate::config::Config;
use crate::lock::Acquire;

/// Where the CLI sends its requests, and the in-process server it started, if any.
pub(super) struct Connection {
    pub(super) client: Client,
    local: Option<Local>,
}

struct Local {
    app: Arc<App>,
    rt: tokio::runtime::Runtime,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl Connection {
    pub(super) fn open(cli: &Cli, config: Config) -> anyhow::Result<Connection> {
        if let Some(url) = &cli.server {
            return Ok(Connection { client: Client::new(url).with_token(cli.token.clone()), local: None });
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match app::acquire(&config.data_dir)? {
                Acquire::HeldBy(Some(info)) => {
                    // The owner's local token (readable only by the user it runs as), unless one is given.
                    let token = cli
                        .token
                        .clone()
                        .or_else(|| std::fs::read_to_string(crate::auth::local_token_path(&config.data_dir)).ok());
                    let client = if info.tls {
                        Client::loopback_tls(&format!("https://{}", info.addr))
                    } else {
                        Client::new(&format!("http://{}", info.addr))
                    };
                    let client = client.with_token(token);
                    return Ok(Connection { client, local: None });
                }
                Acquire::HeldBy(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Acquire::HeldBy(None) => {
                    bail!("data dir {} is locked by an mlbox process that does not answer", config.data_dir.display())
                }
                Acquire::Owned(lock) => return Self::local(config, lock),
            }
        }
    }

    /// Own the data dir for this command: open it and serve the API on a private loopback port.
    fn local(config: Config, lock: crate::lock::DataDirLock) -> anyhow::Result<Connection> {
        let rt = runtime()?;
        let app = Arc::new(App::open(config, lock, false)?);
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        app.publish(&addr.to_string(), "cli")?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = crate::server::router(app.clone());
        rt.spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        let client = Client::new(&format!("http://{addr}")).with_token(Some(app.auth.local_token().to_string()));
        Ok(Connection { client, local: Some(Local { app, rt, stop }) })
    }

    /// Runs started by this command must finish before it exits when it owns the engine.
    pub(super) fn must_wait(&self, asked: bool) -> bool {
        asked || self.local.is_some()
    }

    pub(super) fn close(self) {
        if let Some(l) = self.local {
            let _ = l.stop.send(());
            let app = l.app.clone();
            l.app.shutdown(app.config.grace);
            l.rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}
