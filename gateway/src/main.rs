//! `firegrid`: the gateway's command line. Parses arguments and calls the library.

use std::io::Read;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Parser, Subcommand};
use firegrid_protocol::Limits;

/// firegrid: fire-safety telemetry gateway for urban villages.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check one device message the way the gateway does on receipt, and print what it
    /// decodes to or the single reason it is rejected (exit status 2).
    Inspect {
        /// The MQTT topic, e.g. `fg/v1/fuhai-1/sd-0001/up/state`.
        #[arg(long)]
        topic: String,
        /// The payload: JSON text, or compact bytes as hex with `--hex`. `-` reads stdin.
        payload: String,
        /// The payload is hex-encoded compact bytes.
        #[arg(long)]
        hex: bool,
    },
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Inspect { topic, payload, hex } => {
            let mut text = payload;
            if text == "-" {
                text.clear();
                std::io::stdin().read_to_string(&mut text).context("reading the payload from stdin")?;
            }
            let bytes = if hex {
                hex::decode(text.split_whitespace().collect::<String>())
                    .context("the payload is not valid hex")?
            } else {
                text.into_bytes()
            };
            let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
            match firegrid_gateway::uplink::accept(&topic, &bytes, now_ms, &Limits::default()) {
                Ok(accepted) => {
                    println!("accepted ({:?} class): {:#?}", accepted.msg.class(), accepted.msg);
                    Ok(ExitCode::SUCCESS)
                }
                Err(error) => {
                    println!("rejected, reason={}: {error}", error.reason());
                    Ok(ExitCode::from(2))
                }
            }
        }
    }
}
