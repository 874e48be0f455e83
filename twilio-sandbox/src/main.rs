//! `twilio-sandbox`: a fake Twilio REST API for local development and tests.
//!
//! The inbox (`/inbox`) and admin endpoints have no authentication: bind to
//! loopback and do not expose this process.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use twilio_sandbox::{Sandbox, SandboxConfig};

/// A fake Twilio that speaks Twilio's wire format and shows what it received.
#[derive(Debug, Parser)]
#[command(name = "twilio-sandbox", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "TWILIO_SANDBOX_LISTEN", default_value = "127.0.0.1:4471")]
    listen: SocketAddr,
    /// The AccountSid the sandbox serves.
    #[arg(long, env = "TWILIO_SANDBOX_ACCOUNT_SID", default_value = SandboxConfig::DEFAULT_ACCOUNT_SID)]
    account_sid: String,
    /// The auth token (HTTP Basic password) clients must present.
    #[arg(
        long,
        env = "TWILIO_SANDBOX_AUTH_TOKEN",
        default_value = SandboxConfig::DEFAULT_AUTH_TOKEN,
        hide_default_value = true,
        hide_env_values = true
    )]
    auth_token: String,
    /// How many messages and calls the inbox keeps (oldest dropped first).
    #[arg(long, env = "TWILIO_SANDBOX_INBOX_CAPACITY", default_value_t = SandboxConfig::DEFAULT_INBOX_CAPACITY)]
    inbox_capacity: usize,
    /// Where `POST /sandbox/inbound` sends signed incoming-message webhooks:
    /// the service's `{relay.public_url}/v1/twilio/inbound`.
    #[arg(long, env = "TWILIO_SANDBOX_INBOUND_URL")]
    inbound_url: Option<String>,
    /// Play Twilio, or a SignalWire space: the API under /api/laml, UUID
    /// sids and project id (the default account becomes a UUID), webhooks
    /// signed in X-SignalWire-Signature.
    #[arg(long, env = "TWILIO_SANDBOX_FLAVOR", default_value = "twilio")]
    flavor: twilio_sandbox::Flavor,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // Logs go to stderr so stdout carries only the start-up line.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("twilio-sandbox: cannot listen on {}: {error}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let address = listener.local_addr().unwrap_or(args.listen);
    let account_sid = match args.flavor {
        twilio_sandbox::Flavor::SignalWire
            if args.account_sid == SandboxConfig::DEFAULT_ACCOUNT_SID =>
        {
            twilio_sandbox::SIGNALWIRE_PROJECT_ID.to_owned()
        }
        _ => args.account_sid,
    };
    let sandbox = Sandbox::new(SandboxConfig {
        account_sid,
        auth_token: args.auth_token,
        inbox_capacity: args.inbox_capacity,
        flavor: args.flavor,
    });
    if let Some(url) = args.inbound_url {
        sandbox.set_inbound_url(url);
    }
    println!("twilio-sandbox listening on http://{address} (inbox: http://{address}/inbox)");

    match sandbox.serve(listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("twilio-sandbox: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on Ctrl-C or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
