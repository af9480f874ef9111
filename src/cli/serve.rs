//! `mlbox serve`: own the data dir, load the pipelines dir, serve the API until a signal, drain.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use super::runtime;
use crate::app::{self, App};
use crate::config::Config;
use crate::lock::Acquire;

pub(super) fn serve(config: Config) -> anyhow::Result<ExitCode> {
    let data_dir = config.data_dir.clone();
    let lock = wait_for_lock(&config)?;
    let rt = runtime()?;
    let app = Arc::new(App::open(config.clone(), lock, true)?);
    if let Some(dir) = &config.pipelines {
        for (file, r) in app.load_dir(dir) {
            match r {
                Ok(u) => {
                    tracing::info!(file, pipeline = %u.name, result = ?u.result, "Loaded pipeline")
                }
                Err(e) => tracing::error!(file, "Pipeline not loaded:\n{}", e.message),
            }
        }
    }
    let listener = rt.block_on(tokio::net::TcpListener::bind(config.addr)).with_context(|| {
        format!("cannot listen on {} (is another program using it? pick one with --addr)", config.addr)
    })?;
    let addr = listener.local_addr()?;
    // Other mlbox commands on this machine connect to what we publish: a wildcard address
    // (0.0.0.0 or ::) is reachable on loopback.
    let mut reachable = addr;
    if addr.ip().is_unspecified() {
        reachable.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    app.publish(&reachable.to_string(), "serve")?;
    tracing::info!(%addr, data_dir = %data_dir.display(), slots = config.slots, "mlbox is listening");
    eprintln!("mlbox {} listening on http://{addr} (data dir {})", env!("CARGO_PKG_VERSION"), data_dir.display());
    let router = crate::server::router(app.clone());
    rt.block_on(async {
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("Shutting down: no new tasks start; press Ctrl-C again to quit now");
            tokio::spawn(async {
                let _ = tokio::signal::ctrl_c().await;
                eprintln!("second Ctrl-C: quitting now");
                std::process::exit(130);
            });
        };
        #[cfg(unix)]
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = shutdown => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {
                    tracing::info!("SIGTERM: shutting down");
                }
            }
        };
        let stopping = app.stopping.clone();
        let shutdown = async move {
            shutdown.await;
            // Live streams (run events, log follows) end now instead of holding shutdown open.
            stopping.cancel();
        };
        axum::serve(listener, router).with_graceful_shutdown(shutdown).await
    })?;
    let grace = config.grace;
    rt.block_on(async { tokio::task::spawn_blocking(move || app.shutdown(grace)).await })?;
    tracing::info!("Stopped; state saved");
    Ok(ExitCode::SUCCESS)
}

/// A one-shot CLI holder gives the lock back within moments; wait for it rather than fail.
fn wait_for_lock(config: &Config) -> anyhow::Result<crate::lock::DataDirLock> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match app::acquire(&config.data_dir)? {
            Acquire::Owned(lock) => return Ok(lock),
            Acquire::HeldBy(info) => {
                // A one-shot CLI command, or a holder that has not published its address yet.
                let short = info.as_ref().is_none_or(|i| i.kind != "serve");
                if !short || std::time::Instant::now() > deadline {
                    let who = info
                        .map(|i| format!("mlbox {} (pid {}) at http://{}", i.kind, i.pid, i.addr))
                        .unwrap_or("another mlbox process".into());
                    bail!(
                        "data dir {} is in use by {who}; stop it or use another --data-dir",
                        config.data_dir.display()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}
