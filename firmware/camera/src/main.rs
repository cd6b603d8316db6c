//! `firegrid-camera`: the camera agent's command line. Parses arguments, installs logging,
//! and hands over to the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use firegrid_camera::{Agent, CameraTransport, Config};
use tokio_util::sync::CancellationToken;

/// Normalises a camera's events into firegrid uplinks over MQTT.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the agent until SIGINT or SIGTERM.
    Run {
        /// The TOML configuration (see firegrid-camera.example.toml).
        #[arg(long, env = "FIREGRID_CAMERA_CONFIG")]
        config: PathBuf,
    },
    /// Loads and checks a configuration, then exits.
    CheckConfig {
        /// The TOML configuration.
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match Cli::parse().command {
        Command::CheckConfig { config } => {
            Config::load(&config).with_context(|| format!("loading {}", config.display()))?;
            println!("{}: ok", config.display());
            Ok(())
        }
        Command::Run { config } => {
            let config = Config::load(&config).with_context(|| format!("loading {}", config.display()))?;
            // A camera's embedded Linux has one or two cores; one worker thread is plenty for
            // one stream and one MQTT connection.
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let transport = CameraTransport::from_config(&config.camera)?;
                let agent = Agent::new(config, transport)?;
                let shutdown = CancellationToken::new();
                let signal = shutdown.clone();
                tokio::spawn(async move {
                    wait_for_signal().await;
                    signal.cancel();
                });
                agent.run(shutdown).await?;
                anyhow::Ok(())
            })
        }
    }
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
