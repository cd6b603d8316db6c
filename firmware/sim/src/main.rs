//! `firegrid-sim`: generate a village's registry, or run a village against a broker.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use firegrid_sim::{Fleet, Keys, Mode, RunConfig, Scenario, Village, VillageShape};

#[derive(Parser)]
#[command(about = "firegrid fleet simulator: detectors running the real firmware core, over MQTT")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Args, Clone)]
struct VillageArgs {
    /// Load the village from this registry CSV instead of generating one.
    #[arg(long)]
    registry: Option<PathBuf>,
    #[command(flatten)]
    shape: VillageShape,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write the registry CSV of a generated village (give it to the gateway).
    Generate {
        #[command(flatten)]
        village: VillageArgs,
        /// Output file.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Run the village against a broker.
    Run {
        #[command(flatten)]
        village: VillageArgs,
        /// Broker `host:port`.
        #[arg(long, default_value = "127.0.0.1:1883")]
        broker: String,
        /// Scenario file (TOML; see the `scenario` module docs).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// `direct` (one connection per device) or `platform`.
        #[arg(long, default_value = "platform")]
        mode: String,
        /// Platform connections.
        #[arg(long, default_value_t = 8)]
        connections: usize,
        /// Simulated seconds per real second.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Simulated time to run.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Provisioning file (`village,device,key` CSV, as `firegrid devices provision` writes
        /// it): the devices it lists sign their uplinks and admit only signed downlinks; the
        /// others stay keyless.
        #[arg(long)]
        keys: Option<PathBuf>,
        /// MQTT user name of the fleet's connections (a platform account on the embedded
        /// broker, or an account of your broker's).
        #[arg(long)]
        mqtt_user: Option<String>,
        /// Its password (from the environment, so it stays out of `ps`).
        #[arg(long, env = "FIREGRID_SIM_MQTT_PASSWORD", hide_env_values = true)]
        mqtt_password: Option<String>,
    },
}

fn village(args: &VillageArgs) -> anyhow::Result<Village> {
    Ok(match &args.registry {
        Some(path) => Village::from_registry(path)?,
        None => Village::generate(&args.shape.params(), args.shape.seed)?,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    match Cli::parse().command {
        Cmd::Generate { village: args, out } => {
            let v = village(&args)?;
            std::fs::write(&out, v.registry_csv()).with_context(|| format!("writing {}", out.display()))?;
            println!("{}: {} devices in {} buildings", out.display(), v.devices.len(), v.buildings.len());
        }
        Cmd::Run {
            village: args,
            broker,
            scenario,
            mode,
            connections,
            speed,
            duration,
            keys,
            mqtt_user,
            mqtt_password,
        } => {
            let v = village(&args)?;
            let scenario = match scenario {
                Some(path) => Scenario::from_toml(
                    &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
                )?,
                None => Scenario::default(),
            };
            let mode = match mode.as_str() {
                "direct" => Mode::Direct,
                "platform" => Mode::Platform { connections },
                other => anyhow::bail!("--mode {other:?}: direct or platform"),
            };
            let (host, port) = broker.rsplit_once(':').context("--broker takes host:port")?;
            let keys = match keys {
                Some(path) => Keys::load(&path)?,
                None => Keys::new(),
            };
            let provisioned = keys.len();
            let mut fleet = Fleet::new_keyed(
                v,
                &scenario,
                duration,
                args.shape.seed,
                firegrid_protocol::Encoding::Compact,
                keys,
            )?;
            println!(
                "{} detectors ({provisioned} device keys), {:?}, speed ×{speed}, {}",
                fleet.detectors(),
                mode,
                humantime::format_duration(duration)
            );
            let cfg = RunConfig {
                host: host.to_owned(),
                port: port.parse().context("--broker: the port is not a number")?,
                mode,
                speed,
                duration,
                report_every: Some(Duration::from_secs(5)),
                camera_state: Some(
                    std::env::temp_dir().join(format!("firegrid-sim-cameras-{}", std::process::id())),
                ),
                credentials: mqtt_user.map(|user| (user, mqtt_password.unwrap_or_default())),
            };
            let report =
                firegrid_sim::run(&mut fleet, &cfg, scenario.bad_firmware.as_ref(), Duration::from_secs(30))
                    .await;
            println!("{report:?}");
        }
    }
    Ok(())
}
