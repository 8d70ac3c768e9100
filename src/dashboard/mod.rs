//! pm-dashboard: the web dashboard, started by `pimainteno-dashboard.socket`
//! on the first connection and gone after `[web] idle_exit` without one.
//!
//! - [`activation`]: the listening socket, from systemd or bound by hand;
//! - [`server`]: limits, auth, routes and the idle exit;
//! - [`host`]: the host names a request may be for (DNS rebinding);
//! - [`data`]: what is shown, read from the store (read-only) and systemd;
//! - [`pages`], [`metrics`]: HTML and the Prometheus text format;
//! - [`auth`]: basic auth, required beyond loopback;
//! - [`units`]: unit states from systemd (`systemctl`).

pub mod activation;
pub mod auth;
pub mod data;
pub mod host;
pub mod metrics;
pub mod pages;
pub mod server;
pub mod units;

use std::path::PathBuf;
use std::rc::Rc;

use crate::config::{self, LoadOptions};
use crate::exit::{self, Exit};

pub struct Options {
    pub config: Option<PathBuf>,
    /// `--listen`: bind this address instead of `[web] host:port`.
    pub listen: Option<String>,
    /// The store to read (`$PIMAINTENO_STORE`, written by the generator:
    /// the unit has no `StateDirectory=`, which would make it writable).
    pub store: Option<PathBuf>,
}

/// Serve until idle (socket activation) or until killed (by hand).
pub fn run(opts: Options) -> anyhow::Result<Exit> {
    let inherited = activation::inherited()?;
    let settings = match config::load(&LoadOptions {
        path: opts.config.clone(),
        defaults_if_missing: true,
    }) {
        Ok(s) => s,
        Err(e) => return refuse(inherited, e.into()),
    };
    for w in &settings.warnings {
        tracing::debug!("{w}");
    }
    let activated = inherited.is_some();
    let listener = match inherited {
        Some(l) => l,
        None => {
            let addr = opts
                .listen
                .clone()
                .unwrap_or_else(|| activation::address(&settings.web));
            activation::bind(&addr)?
        }
    };
    let local = listener.local_addr()?;
    let auth = if local.ip().is_loopback() {
        None
    } else {
        match auth::Auth::load(&settings.web, &local.to_string()) {
            Ok(a) => Some(a),
            Err(e) => return refuse(Some(listener), e),
        }
    };
    let store = opts
        .store
        .clone()
        .unwrap_or_else(|| settings.cache.path.clone());
    // By hand nobody would start it again, so only systemd's copy idles out.
    let idle = activated.then_some(settings.web.idle_exit);
    tracing::debug!(
        "serving http://{local}/ (store {}, {})",
        store.display(),
        if auth.is_some() {
            "basic auth"
        } else {
            "loopback, no auth"
        }
    );
    if !activated {
        eprintln!("pm-dashboard: serving http://{local}/");
    }
    let app = Rc::new(server::App::new(settings, store, auth));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let local_set = tokio::task::LocalSet::new();
    local_set.block_on(&rt, async move {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        activation::ready();
        server::serve(listener, app, idle).await;
        anyhow::Ok(())
    })?;
    Ok(Exit::Ok)
}

/// The dashboard will not serve (bad configuration, no password beyond
/// loopback): say why, and answer the connections systemd already
/// accepted for us with 503, so that the socket does not start the
/// service again and again for them.
fn refuse(listener: Option<std::net::TcpListener>, e: anyhow::Error) -> anyhow::Result<Exit> {
    let Some(listener) = listener else {
        return Err(e);
    };
    exit::report(&e);
    activation::turn_away(&listener);
    Ok(exit::code_for(&e))
}
