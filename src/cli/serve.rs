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
    // Bad TLS files stop the start before anything else is touched.
    let tls = config.tls.as_ref().map(crate::server::tls::server_config).transpose()?;
    let app = Arc::new(App::open(config.clone(), lock, true)?);
    if app.auth.enabled {
        first_admin(&app)?;
    }
    if app.config.retention != crate::config::Retention::default() {
        retention(app.clone())?;
    }
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
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, data_dir = %data_dir.display(), slots = config.slots, auth = config.auth, "mlbox is listening");
    eprintln!("mlbox {} listening on {scheme}://{addr} (data dir {})", env!("CARGO_PKG_VERSION"), data_dir.display());
    if !config.auth {
        eprintln!("authentication is off (--no-auth): anyone who can reach {addr} can change anything");
    }
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
        match tls {
            Some(cfg) => {
                let listener = crate::server::tls::TlsListener::new(listener, cfg)?;
                axum::serve(listener, router).with_graceful_shutdown(shutdown).await
            }
            None => axum::serve(listener, router).with_graceful_shutdown(shutdown).await,
        }
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

/// An empty user table gets an admin: with the password in `MLBOX_ADMIN_PASSWORD` if set, else a
/// random one printed here, once.
fn first_admin(app: &App) -> anyhow::Result<()> {
    use crate::auth;
    if app.store.read(auth::user_count)? > 0 {
        return Ok(());
    }
    let given = std::env::var("MLBOX_ADMIN_PASSWORD").ok().filter(|p| !p.is_empty());
    let password = given.clone().unwrap_or_else(auth::new_password);
    let hash = auth::hash_password(&password).context("MLBOX_ADMIN_PASSWORD")?;
    app.store.write(move |tx| auth::add_user(tx, "admin", auth::Role::Admin, &hash))?;
    if given.is_some() {
        eprintln!("created user `admin` with the password from MLBOX_ADMIN_PASSWORD");
    } else {
        eprintln!(
            "\n  created user `admin` with password  {password}\n  (shown only now; change it with `mlbox users set admin --password`)\n"
        );
    }
    Ok(())
}

/// Apply retention a minute after start, then hourly, until the server stops.
fn retention(app: Arc<App>) -> anyhow::Result<()> {
    std::thread::Builder::new().name("mlbox-retention".into()).spawn(move || {
        let mut wait = 60;
        loop {
            for _ in 0..wait {
                if app.stopping.is_cancelled() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            wait = 3600;
            match crate::maintenance::gc(&app, false) {
                Ok(f) if !f.runs.is_empty() || f.artifact_files > 0 => tracing::info!(
                    runs = f.runs.len(),
                    artifact_files = f.artifact_files,
                    bytes = f.bytes,
                    "Retention deleted old runs"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e.message, "Retention failed"),
            }
        }
    })?;
    Ok(())
}
