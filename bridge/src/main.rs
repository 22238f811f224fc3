//! `rowsync-bridge [--config FILE] [--check-config] [--mint-token SUB]`: loads the
//! configuration, sets up logging, binds, and serves until Ctrl-C or SIGTERM.
//! `--mint-token` prints an HS256 token for user SUB signed with the configured secret,
//! valid for an hour: for development, where the bridge holds the secret anyway.

use rowsync_bridge::Config;
use std::path::PathBuf;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut file = std::env::var_os("ROWSYNC_CONFIG").map(PathBuf::from);
    let mut check = false;
    let mut mint: Option<String> = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => file = args.next().map(PathBuf::from),
            "--check-config" => check = true,
            "--mint-token" => mint = args.next(),
            _ => {
                eprintln!(
                    "usage: rowsync-bridge [--config FILE] [--check-config] [--mint-token SUB]"
                );
                std::process::exit(2);
            }
        }
    }
    let config = match Config::load(file.as_deref(), std::env::vars()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("rowsync-bridge: bad configuration: {error}");
            std::process::exit(1);
        }
    };
    if let Some(sub) = mint {
        match rowsync_bridge::auth::mint(&config, &sub, 3600) {
            Ok(token) => println!("{token}"),
            Err(error) => {
                eprintln!("rowsync-bridge: {error}");
                std::process::exit(1);
            }
        }
        return;
    }
    if check {
        // Everything the server would build at start: the pool's URL, the token key.
        let (_, stopped) = tokio::sync::watch::channel(false);
        if let Err(error) = rowsync_bridge::state::AppState::new(config.clone(), stopped) {
            eprintln!("rowsync-bridge: bad configuration: {error}");
            std::process::exit(1);
        }
        println!("{config:#?}");
        println!("configuration OK");
        return;
    }
    let filter = std::env::var("ROWSYNC_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .json()
        .init();
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!(
                "rowsync-bridge: cannot listen on {}: {error}",
                config.listen
            );
            std::process::exit(1);
        }
    };
    if let Err(error) = rowsync_bridge::run(listener, config, shutdown_signal()).await {
        eprintln!("rowsync-bridge: {error}");
        std::process::exit(1);
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
