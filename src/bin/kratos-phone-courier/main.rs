//! The `kratos-phone-courier` binary: parses arguments, loads the
//! configuration and hands over to the library.
//!
//! `serve --dev` ([`dev`]) lives here rather than in the library: it is the
//! one place that links the Twilio stand-in, and only with the `dev` feature
//! (on by default, so the README's first command works from a checkout).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kratos_phone_courier::config::{Config, Sources};
use kratos_phone_courier::http::server;
use kratos_phone_courier::startup;

#[cfg(feature = "dev")]
mod dev;

#[derive(Parser)]
#[command(name = "kratos-phone-courier", version, about, long_about = None)]
struct Cli {
    /// Configuration file (TOML or YAML), layered over the built-in defaults
    /// and under PHONE_COURIER__SECTION__KEY environment variables.
    #[arg(long, short = 'c', global = true, env = "PHONE_COURIER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default).
    Serve {
        /// Development mode: start a Twilio sandbox in this process on a free
        /// loopback port and send to it, with authentication disabled.
        #[arg(long)]
        dev: bool,
        /// With --dev: two sandboxes as providers, a Twilio one that fails
        /// every other request with a 503 and a SignalWire one, to show
        /// failover.
        #[arg(long, requires = "dev")]
        failover: bool,
    },
    /// Load and check the configuration, print it with secrets redacted.
    CheckConfig,
    /// Probe a health endpoint and exit 0 if it answers 2xx (for container
    /// health checks on images without curl).
    Healthcheck {
        #[arg(long, default_value = "http://127.0.0.1:4470/health/ready")]
        url: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let sources = Sources::from_process(cli.config);
    let default = Command::Serve {
        dev: false,
        failover: false,
    };
    match cli.command.unwrap_or(default) {
        Command::CheckConfig => check_config(&sources),
        Command::Serve { dev, failover } => run(async move {
            if dev {
                serve_dev(sources, failover).await
            } else {
                serve(sources).await
            }
        }),
        // Container health checks want 1 for "unhealthy".
        Command::Healthcheck { url } => match run(async move { healthcheck(&url).await }) {
            c if c == ExitCode::SUCCESS => c,
            _ => ExitCode::from(1),
        },
    }
}

fn check_config(sources: &Sources) -> ExitCode {
    match Config::load(sources) {
        Ok(config) => {
            match serde_json::to_string_pretty(&config) {
                Ok(text) => println!("{text}"),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
            eprintln!("configuration OK");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(fut: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(fut);
    // Do not wait for background blocking work (the phone-number database
    // warm-up) once the server has stopped: exit now.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(feature = "dev")]
async fn serve_dev(sources: Sources, failover: bool) -> Result<(), String> {
    dev::run(sources, failover, server::shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

#[cfg(not(feature = "dev"))]
async fn serve_dev(_: Sources, _: bool) -> Result<(), String> {
    Err("this build has no development mode (built without the `dev` feature)".into())
}

async fn serve(sources: Sources) -> Result<(), String> {
    let config = Config::load(&sources).map_err(|e| e.to_string())?;
    let listener = startup::bind(&config).await.map_err(|e| e.to_string())?;
    startup::serve(config, listener, server::shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

async fn healthcheck(url: &str) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .build()
        .map_err(|e| e.to_string())?;
    let response = client.get(url).send().await.map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("{url} answered {}", response.status()))
    }
}
