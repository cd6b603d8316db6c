//! `firegrid`: the gateway's command line. Parses arguments, installs logging, and calls the
//! library.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Parser, Subcommand};
use firegrid_gateway::config::Config;
use firegrid_gateway::runtime::Gateway;
use firegrid_gateway::sources::mqtt::MqttConfig;
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
    /// Run everything on this machine: the broker, the gateway with its alarm loop and
    /// archive, the duty-officer console, and a simulated village (the detector firmware on
    /// simulated hardware) playing a scripted day with a fire. Prints console links with demo
    /// officer tokens. Ctrl-C stops it.
    Demo(Box<DemoArgs>),
    /// Run the gateway. With no configuration it starts its own MQTT broker on
    /// 127.0.0.1:1883, keeps a local archive in ./firegrid-data, and serves /metrics on
    /// 127.0.0.1:8080.
    Run {
        /// Configuration file (see gateway/firegrid.example.toml).
        #[arg(long, short, env = "FIREGRID_CONFIG")]
        config: Option<PathBuf>,
        /// Data directory (spool, dead letters, state); overrides the file.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// HTTP address for /metrics and /healthz; overrides the file.
        #[arg(long)]
        http_listen: Option<SocketAddr>,
        /// Use this external broker (host:port) instead of the file's or the embedded one.
        #[arg(long)]
        mqtt: Option<String>,
    },
    /// Check a configuration file the way `run` does before it starts (the file itself, and
    /// the registry, key store, officer directory, certificates and holiday files it names,
    /// routes and scopes) and print every problem, with file and line; exit status 2 if any.
    CheckConfig {
        /// Configuration file, as for `run` (`--config FILE`, or `FIREGRID_CONFIG`).
        #[arg(long = "config", short = 'c', env = "FIREGRID_CONFIG", conflicts_with = "file")]
        config: Option<PathBuf>,
        /// The same, given without `--config`.
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
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
    /// Device keys: issue, rotate and revoke them, and switch a device's unsigned messages on
    /// or off during a firmware migration. Edits the key store; a running gateway reloads it.
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// Broker configuration generated from the registry and the key store.
    #[command(subcommand)]
    Broker(BrokerCommand),
    /// Make a local certificate authority (once) and TLS certificates signed by it: a server
    /// certificate for the officer HTTPS listener and the MQTT broker, and client
    /// certificates. Writes ca.pem/ca.key, server.pem/server.key and client-NAME.pem/.key
    /// (keys mode 0600) into --out-dir; an existing CA there is reused.
    Certs {
        /// Where to write the files.
        #[arg(long)]
        out_dir: PathBuf,
        /// A DNS name or IP address the server certificate is valid for (repeat; localhost and
        /// 127.0.0.1 are always included).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Also make a client certificate with this name (repeat).
        #[arg(long = "client")]
        clients: Vec<String>,
        /// Validity of the new certificates, days.
        #[arg(long, default_value_t = 397)]
        days: u32,
    },
    /// Make a new duty-officer API token: prints the token (give it to the officer) and the
    /// `token_sha256` line for the officer directory (only the hash is stored).
    OfficerToken,
    /// Detector firmware: the vendor's Ed25519 signing key and signed images.
    #[command(subcommand)]
    Firmware(FirmwareCommand),
}

/// `firegrid firmware` subcommands.
#[derive(Subcommand)]
enum FirmwareCommand {
    /// Make a new vendor signing key (a new file, mode 0600) and print its public key, which
    /// the detectors' bootloader is built with. Keep the key offline: whoever holds it can
    /// make images the fleet boots.
    Keygen {
        /// The key file to create (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a firmware image (raw binary, as flashed into the active slot): writes
    /// IMAGE.fwsig.json beside it (version, security counter, key slot, size, SHA-256, and the
    /// Ed25519 signature of the version, counter, key slot and SHA-512).
    Sign {
        /// The image.
        image: PathBuf,
        /// The signing key made by `keygen`.
        #[arg(long)]
        key: PathBuf,
        /// The image's firmware version (1 to 16 printable characters).
        #[arg(long)]
        version: String,
        /// Anti-rollback security counter: raise it for a release that fixes a vulnerability,
        /// and keep it (never lower it) otherwise. Devices refuse an image whose counter is
        /// below that of the newest image they marked good; `publish` refuses one below the
        /// last published.
        #[arg(long, default_value_t = 0)]
        security_counter: u32,
        /// The bootloader's key slot of `--key` (0 to 2). Signing with a higher slot than
        /// the fleet's last release rotates the vendor key: every device that marks the image
        /// good refuses images of the lower slots from then on (firmware/boot README, "Key
        /// rotation").
        #[arg(long, default_value_t = 0)]
        key_slot: u8,
    },
    /// Roll a signed image out to detectors through a running gateway: canaries first, then
    /// waves, pausing itself when too many fail. Checks the signature under the configured
    /// `[firmware] vendor_public_keys` key of the slot the image names, refuses an image whose
    /// key slot or security counter is below the last published one (the devices that
    /// installed that one would refuse it), and writes
    /// the rollout into the gateway's data directory, which the gateway reloads within a
    /// second (as it does the key store).
    Publish {
        /// The image; its IMAGE.fwsig.json (from `firegrid firmware sign`) beside it.
        image: PathBuf,
        /// The gateway's configuration file (its data directory, registry and vendor key).
        #[arg(long, short, env = "FIREGRID_CONFIG")]
        config: PathBuf,
        /// These devices, in this order (the first ones are the canaries); comma-separated
        /// or repeated. Each must be a smoke detector of the registry.
        #[arg(long, value_delimiter = ',', required_unless_present = "all", conflicts_with = "all")]
        devices: Vec<String>,
        /// Every smoke detector of the registry, in file order.
        #[arg(long)]
        all: bool,
        /// Share of the devices in the first wave, 0 to 1 (at least one device).
        #[arg(long, default_value_t = 0.05)]
        canary_share: f64,
        /// Devices per wave after the canaries.
        #[arg(long, default_value_t = 500)]
        wave_size: usize,
        /// Failed share of the settled devices above which the rollout pauses itself.
        #[arg(long, default_value_t = 0.10)]
        max_failure_share: f64,
        /// How long to wait for a device's answer before sending the last command again.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        resend_after: std::time::Duration,
        /// Replace a rollout that has not finished.
        #[arg(long)]
        replace: bool,
    },
    /// Where the current rollout stands: counts by state, and the devices not booted yet.
    Status {
        /// The gateway's configuration file.
        #[arg(long, short, env = "FIREGRID_CONFIG")]
        config: PathBuf,
    },
    /// Pause the current rollout: no new wave starts; devices already updating finish.
    Pause {
        /// The gateway's configuration file.
        #[arg(long, short, env = "FIREGRID_CONFIG")]
        config: PathBuf,
    },
    /// Resume the current rollout, paused by the operator or by itself.
    Resume {
        /// The gateway's configuration file.
        #[arg(long, short, env = "FIREGRID_CONFIG")]
        config: PathBuf,
    },
}

/// `firegrid broker` subcommands.
#[derive(Subcommand)]
enum BrokerCommand {
    /// Write Mosquitto's password file and ACL file: one account per keyed device (user name
    /// its id, password derived from its key), allowed to publish only its own uplinks and read
    /// only its own downlinks, and the gateway's account (password kept in gateway.password).
    /// Use them with `allow_anonymous false`, `password_file` and `acl_file`.
    Mosquitto {
        /// The device registry (CSV).
        #[arg(long)]
        registry: PathBuf,
        /// The gateway's key store.
        #[arg(long)]
        keys: PathBuf,
        /// Where to write passwd, acl and gateway.password.
        #[arg(long)]
        out_dir: PathBuf,
    },
}

/// `firegrid devices` subcommands.
#[derive(Subcommand)]
enum DevicesCommand {
    /// Issue keys for the registry's devices that have none (or, with --all, new keys for
    /// every device), and write the provisioning file (CSV village,device,key; mode 0600) for
    /// the factory's flashing tool.
    Provision {
        /// The device registry (CSV).
        #[arg(long)]
        registry: PathBuf,
        /// The gateway's key store (created if missing).
        #[arg(long)]
        keys: PathBuf,
        /// The provisioning file to write.
        #[arg(long)]
        out: PathBuf,
        /// Rotate the keys of devices that already have one, too.
        #[arg(long)]
        all: bool,
        /// How long rotated devices' old keys stay accepted.
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        grace: std::time::Duration,
    },
    /// Give devices new keys; their old keys stay accepted for the grace period.
    Rotate {
        /// The device registry (CSV), for the devices' villages.
        #[arg(long)]
        registry: PathBuf,
        /// The gateway's key store.
        #[arg(long)]
        keys: PathBuf,
        /// The provisioning file to write.
        #[arg(long)]
        out: PathBuf,
        /// How long the old keys stay accepted.
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        grace: std::time::Duration,
        /// Device ids.
        #[arg(required = true)]
        devices: Vec<String>,
    },
    /// Refuse every message from these devices and send them nothing.
    Revoke {
        /// The gateway's key store.
        #[arg(long)]
        keys: PathBuf,
        /// Device ids.
        #[arg(required = true)]
        devices: Vec<String>,
    },
    /// Reset a device's replay window on the running gateway, for a detector whose boot counter
    /// went backwards (reflashed) and that cannot answer the gateway's challenge. Needs a duty
    /// officer's or commander's token (from FIREGRID_TOKEN or --token-file, never the command
    /// line); audited.
    ResetWindow {
        /// The gateway's HTTP base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        api: String,
        /// A file holding the officer's bearer token (else FIREGRID_TOKEN).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// The device id.
        device: String,
    },
    /// Accept these keyed devices' unsigned messages too (firmware that does not sign yet),
    /// or, with --off, refuse them again. Accepted unsigned messages are counted.
    AcceptUnsigned {
        /// The gateway's key store.
        #[arg(long)]
        keys: PathBuf,
        /// Refuse unsigned messages again.
        #[arg(long)]
        off: bool,
        /// Device ids.
        #[arg(required = true)]
        devices: Vec<String>,
    },
}

/// `firegrid demo` flags.
#[derive(clap::Args)]
struct DemoArgs {
    #[command(flatten)]
    village: firegrid_sim::VillageShape,
    /// Simulated seconds per real second: 10 plays the scripted day in 2.4 hours, the fire
    /// 30 s after the start. Escalation deadlines run on the real clock.
    #[arg(long, default_value_t = 10.0)]
    speed: f64,
    /// Simulated time to play.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    duration: std::time::Duration,
    /// Keep the generated files, the archive and the case store here (default: a temporary
    /// directory removed at exit).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address of the console, the officer API and /metrics.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Address of the embedded MQTT broker.
    #[arg(long, default_value = "127.0.0.1:1883")]
    broker: SocketAddr,
    /// Use this external broker (host:port) instead of the embedded one.
    #[arg(long)]
    mqtt: Option<String>,
    /// Also write the time series to this InfluxDB 1.x-compatible server (base URL, e.g.
    /// http://127.0.0.1:8086); the local spool archive is kept either way.
    #[arg(long)]
    influx: Option<String>,
    /// The InfluxDB database for --influx.
    #[arg(long, default_value = "firegrid")]
    influx_database: String,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 5)]
    report_every: u64,
    /// When the scripted fire starts (simulated time).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    fire_at: std::time::Duration,
    /// How long after it starts in each building the fire is put out (simulated time).
    #[arg(long, default_value = "20m", value_parser = humantime::parse_duration)]
    fire_out_after: std::time::Duration,
    /// Also send every page to this webhook (HMAC-signed with the secret `demo`).
    #[arg(long)]
    webhook: Option<String>,
    /// Draw the console's village map over this offline PMTiles archive (a raster archive,
    /// or a vector one drawn as outlines); without it the map shows the buildings alone.
    #[arg(long)]
    basemap: Option<std::path::PathBuf>,
}

fn host_port(text: &str, flag: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = text.rsplit_once(':').with_context(|| format!("{flag} takes host:port"))?;
    let port = port.parse().with_context(|| format!("{flag}: the port is not a number"))?;
    Ok((host.to_owned(), port))
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    // The demo's own output is its progress lines; the gateway's log shows warnings only.
    let default_log = if matches!(cli.command, Command::Demo(_)) {
        "warn,rumqttd=off,firegrid_camera=error"
    } else {
        "info,rumqttd=off"
    };
    // The embedded broker (rumqttd) logs every connection at info and routine disconnects as
    // errors; it is quiet unless asked for, e.g. FIREGRID_LOG=info,rumqttd=info.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FIREGRID_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log)),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Run { config, data_dir, http_listen, mqtt } => {
            let mut cfg = Config::load(config.as_deref(), std::env::vars())?;
            if let Some(dir) = data_dir {
                cfg.data_dir = dir;
            }
            if let Some(listen) = http_listen {
                cfg.http_listen = listen;
            }
            if let Some(broker) = mqtt {
                let (host, port) = host_port(&broker, "--mqtt")?;
                let base = cfg.mqtt.take().unwrap_or_default();
                cfg.mqtt = Some(MqttConfig { host, port, ..base });
            }
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(run(cfg))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => {
            let args = *args;
            let defaults = firegrid_gateway::demo::DemoOptions::default();
            let opts = firegrid_gateway::demo::DemoOptions {
                village: args.village.params(),
                seed: args.village.seed,
                speed: args.speed,
                duration: args.duration,
                data_dir: args.data_dir,
                http_listen: args.http,
                broker_listen: args.broker,
                mqtt: args.mqtt.as_deref().map(|m| host_port(m, "--mqtt")).transpose()?,
                influx: args.influx.map(|url| (url, args.influx_database)),
                report_every: std::time::Duration::from_secs(args.report_every.max(1)),
                fire_at: args.fire_at,
                fire_out_after: args.fire_out_after,
                webhook: args.webhook,
                basemap: args.basemap,
                ..defaults
            };
            anyhow::ensure!(opts.speed > 0.0, "--speed must be above 0");
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(firegrid_gateway::demo::run(opts, stop_signal()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { config, file } => {
            let Some(config) = config.or(file) else {
                println!("check-config needs the file: firegrid check-config --config FILE");
                return Ok(ExitCode::from(2));
            };
            match Config::load(Some(&config), std::env::vars()).and_then(|c| c.check().map(|_| c)) {
                Ok(cfg) => {
                    println!(
                        "{}: OK ({} database destination(s), {})",
                        config.display(),
                        cfg.influx.len(),
                        if cfg.mqtt.is_some() { "external broker" } else { "embedded broker" }
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(error) => {
                    println!("{error}");
                    Ok(ExitCode::from(2))
                }
            }
        }
        Command::Devices(command) => {
            use firegrid_gateway::keys::admin;
            let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
            match command {
                DevicesCommand::Provision { registry, keys, out, all, grace } => {
                    let n = admin::provision_registry(
                        &registry,
                        &keys,
                        &out,
                        all,
                        now_ms,
                        grace.as_millis() as u64,
                    )?;
                    if n == 0 {
                        println!(
                            "Every device in {} already has a key; nothing written.",
                            registry.display()
                        );
                    } else {
                        println!(
                            "Issued {n} key(s): key store {}, provisioning file {}.",
                            keys.display(),
                            out.display()
                        );
                    }
                }
                DevicesCommand::Rotate { registry, keys, out, grace, devices } => {
                    let n = admin::rotate_devices(
                        &registry,
                        &keys,
                        &out,
                        &devices,
                        now_ms,
                        grace.as_millis() as u64,
                    )?;
                    println!(
                        "Rotated {n} key(s); the old ones are accepted for {}. Provisioning file {}.",
                        humantime::format_duration(grace),
                        out.display()
                    );
                }
                DevicesCommand::Revoke { keys, devices } => {
                    let n = admin::revoke_devices(&keys, &devices)?;
                    println!("Revoked {n} device(s) in {}.", keys.display());
                }
                DevicesCommand::ResetWindow { api, token_file, device } => {
                    let token = match token_file {
                        Some(path) => std::fs::read_to_string(&path)
                            .with_context(|| format!("reading the token from {}", path.display()))?,
                        None => std::env::var("FIREGRID_TOKEN")
                            .context("give the officer's token in FIREGRID_TOKEN or --token-file")?,
                    };
                    let runtime = tokio::runtime::Runtime::new()?;
                    match runtime.block_on(admin::reset_window_via_api(&api, token.trim(), &device)) {
                        Ok(answer) => println!("Replay window of {device} reset: {answer}"),
                        Err(error) => {
                            eprintln!("error: {error}");
                            return Ok(ExitCode::from(2));
                        }
                    }
                }
                DevicesCommand::AcceptUnsigned { keys, off, devices } => {
                    let n = admin::set_accept_unsigned(&keys, &devices, !off)?;
                    let what = if off { "refused again" } else { "accepted (and counted)" };
                    println!("Unsigned messages of {n} device(s) are {what}.");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Broker(BrokerCommand::Mosquitto { registry, keys, out_dir }) => {
            use firegrid_gateway::broker::mosquitto;
            let registry = firegrid_gateway::registry::Registry::load(&registry)?;
            let keys = firegrid_gateway::keys::KeyStore::load(&keys)?;
            let done = mosquitto::generate(&registry, &keys, &out_dir)
                .with_context(|| format!("writing into {}", out_dir.display()))?;
            println!(
                "Wrote {dir}/passwd and {dir}/acl: {} device account(s) and the gateway's ({}, password in {dir}/gateway.password{}).",
                done.devices,
                mosquitto::GATEWAY_USER,
                if done.new_gateway_password { ", new" } else { ", kept" },
                dir = out_dir.display()
            );
            if !done.keyless.is_empty() {
                println!(
                    "warning: {} registered device(s) have no key and get no account (they cannot connect): {}",
                    done.keyless.len(),
                    done.keyless.iter().take(10).cloned().collect::<Vec<_>>().join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Certs { out_dir, hosts, clients, days } => {
            use firegrid_gateway::tls::certs;
            let made = certs::make(&certs::Request { dir: out_dir.clone(), hosts, clients, days })
                .with_context(|| format!("making certificates in {}", out_dir.display()))?;
            println!(
                "{} CA in {}/ca.pem. Wrote:",
                if made.new_ca { "Made a new" } else { "Signed with the existing" },
                out_dir.display()
            );
            for file in &made.files {
                println!("  {}", file.display());
            }
            println!(
                "Give ca.pem to every client (browsers, brokers, devices); keep ca.key offline. Renew the server \
                 certificate by running this again: a gateway serving it over HTTPS reloads it."
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Firmware(FirmwareCommand::Keygen { out }) => {
            let public = firegrid_gateway::firmware::signing::keygen(&out)?;
            println!("signing key written to {} (mode 0600)", out.display());
            println!("public key (build it into the bootloader): {}", hex_of(public.as_bytes()));
            Ok(ExitCode::SUCCESS)
        }
        Command::Firmware(FirmwareCommand::Sign { image, key, version, security_counter, key_slot }) => {
            use firegrid_gateway::firmware::signing;
            let bytes = std::fs::read(&image).with_context(|| format!("reading {}", image.display()))?;
            let key = signing::load_key(&key)?;
            let signed = signing::sign_in_slot(&bytes, &version, security_counter, key_slot, &key)?;
            let path = signed.save(&image)?;
            println!(
                "{} signed as {version}, security counter {security_counter}, key slot {key_slot} ({} bytes): {}",
                image.display(),
                signed.size,
                path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Firmware(FirmwareCommand::Publish {
            image,
            config,
            devices,
            all,
            canary_share,
            wave_size,
            max_failure_share,
            resend_after,
            replace,
        }) => {
            use firegrid_gateway::firmware::delivery::control;
            use firegrid_gateway::firmware::rollout::Plan;
            let cfg = Config::load(Some(&config), std::env::vars())?;
            let vendor = cfg.firmware.vendor_keys()?;
            let csv =
                cfg.registry.csv.as_ref().context("the configuration names no registry ([registry] csv)")?;
            let registry = firegrid_gateway::registry::Registry::load(csv)?;
            let detector = |d: &firegrid_gateway::registry::Device| {
                d.kind == firegrid_gateway::registry::DeviceKind::SmokeDetector
            };
            let targets = if all {
                registry.devices().iter().filter(|d| detector(d)).map(|d| (**d).clone()).collect::<Vec<_>>()
            } else {
                let mut out = Vec::new();
                for id in &devices {
                    let dev = firegrid_protocol::DeviceId::new(id.trim())
                        .map_err(|e| anyhow::anyhow!("device {id:?}: {e}"))?;
                    let found = registry.get(&dev).filter(|d| detector(d));
                    out.push(
                        (**found.with_context(|| format!("{id} is not a smoke detector of the registry"))?)
                            .clone(),
                    );
                }
                out
            };
            let targets = targets
                .into_iter()
                .map(|d| control::Target {
                    village: d.building.village.to_string(),
                    device: d.id.to_string(),
                })
                .collect();
            let plan = Plan { canary_share, wave_size, max_failure_share, resend_after, ..Plan::default() };
            let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
            let req = control::Publish { image: &image, devices: targets, plan, replace };
            let request = control::publish(&cfg.data_dir, &vendor, req, now_ms)?;
            println!(
                "Rollout {} of {} (security counter {}, key slot {}, {} bytes) to {} device(s) written to {}; the gateway starts it within seconds.",
                request.id,
                request.signed.version,
                request.signed.security_counter,
                request.signed.key_slot,
                request.signed.size,
                request.devices.len(),
                control::dir(&cfg.data_dir).display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Firmware(FirmwareCommand::Status { config }) => {
            use firegrid_gateway::firmware::delivery::control;
            let cfg = Config::load(Some(&config), std::env::vars())?;
            let dir = control::dir(&cfg.data_dir);
            let request = control::Request::load(&dir)?.context("no rollout has been published")?;
            let Some(progress) = control::Progress::load(&dir)?.filter(|p| p.id == request.id) else {
                println!("Rollout {}: published, not started by the gateway yet.", request.id);
                return Ok(ExitCode::SUCCESS);
            };
            let state = match (progress.done, progress.paused) {
                (true, _) => "done",
                (false, true) => "paused",
                (false, false) => "running",
            };
            println!(
                "Rollout {} of {}: {state}, wave {} of {}.",
                progress.id, progress.version, progress.waves.0, progress.waves.1
            );
            let share = |x: f64| format!("{:.0} %", x * 100.0);
            match (progress.done, progress.paused_by) {
                (false, Some(control::PausedBy::Failures)) => println!(
                    "  Paused by itself: {} of the settled devices failed, above its threshold of {}. Look at the failed devices below; `firegrid firmware resume` goes on with the next wave.",
                    share(progress.failure_share),
                    share(progress.max_failure_share)
                ),
                (false, Some(control::PausedBy::Operator)) => {
                    println!("  Paused by the operator; `firegrid firmware resume` goes on.")
                }
                _ => println!(
                    "  Failed: {} of the settled devices (it pauses itself above {}).",
                    share(progress.failure_share),
                    share(progress.max_failure_share)
                ),
            }
            for (state, n) in &progress.counts {
                println!("  {state}: {n}");
            }
            for d in progress.devices.iter().filter(|d| d.state != "booted" && d.state != "waiting") {
                println!("  {} {} ({} bytes)", d.device, d.state, d.offset);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Firmware(FirmwareCommand::Pause { config }) => pause_rollout(&config, true),
        Command::Firmware(FirmwareCommand::Resume { config }) => pause_rollout(&config, false),
        Command::OfficerToken => {
            let (token, hash) = firegrid_officers::new_token();
            println!("token (give to the officer, shown once): {token}");
            println!("token_sha256 = \"{hash}\"");
            Ok(ExitCode::SUCCESS)
        }
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
            let limits = Limits::default();
            match firegrid_gateway::uplink::accept(&topic, &bytes, &limits) {
                Ok(accepted) => {
                    println!("accepted ({:?} class): {:#?}", accepted.msg.class(), accepted.msg);
                    if let Some(skew) = accepted.msg.clock_skew(now_ms, &limits) {
                        let relation = if skew.direction() == "ahead" { "ahead of" } else { "behind" };
                        println!(
                            "note: ts_ms is {} ms {relation} this machine's clock; the gateway accepts \
                             the message, stores it at its own time and flags the device's clock",
                            skew.ms()
                        );
                    }
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

async fn run(mut cfg: Config) -> anyhow::Result<()> {
    let api_on_loopback = cfg.http_listen.ip().is_loopback();
    let first_run = firegrid_officers::first_run::prepare(&mut cfg.alerting, &cfg.data_dir, api_on_loopback)
        .with_context(|| format!("making the first-run officer directory in {}", cfg.data_dir.display()))?;
    let alarm_loop = cfg.alerting.enabled;
    let gateway = Gateway::start(cfg, None).await?;
    eprintln!(
        "firegrid is running: MQTT on {}:{}, metrics at http://{addr}/metrics, officer API at http://{addr}/api/v1 (described at /api/v1/openapi.json). Ctrl-C stops it.",
        gateway.mqtt.host,
        gateway.mqtt.port,
        addr = gateway.http_addr
    );
    if alarm_loop {
        let console = format!("http://{}/console", gateway.http_addr);
        match &first_run {
            Some(first) => match &first.token {
                Some(token) => eprintln!(
                    "No officer directory is configured, so one local commander ({}, {}) was made in {}.\n\
                     Console (this link holds the officer's token and is shown only now): {console}#token={token}",
                    firegrid_officers::first_run::OFFICER,
                    first.scope,
                    first.directory.display()
                ),
                None => eprintln!(
                    "Console: {console} (sign in as {} with the token printed at the first run; `firegrid officer-token` \
                     makes a new one for {}).",
                    firegrid_officers::first_run::OFFICER,
                    first.directory.display()
                ),
            },
            None => eprintln!("Console: {console}"),
        }
    }
    stop_signal().await;
    tracing::info!("Stopping: finishing in-flight messages.");
    gateway.stop().await;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn stop_signal() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(error) => {
            tracing::warn!(%error, "Cannot watch SIGTERM; Ctrl-C still stops.");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Lowercase hex of `bytes`.
/// `firegrid firmware pause` (`true`) and `resume`.
fn pause_rollout(config: &std::path::Path, pause: bool) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(Some(config), std::env::vars())?;
    let request = firegrid_gateway::firmware::delivery::control::set_paused(&cfg.data_dir, pause)?;
    println!(
        "Rollout {} {}; the gateway acts on it within seconds.",
        request.id,
        if pause { "paused" } else { "resumed" }
    );
    Ok(ExitCode::SUCCESS)
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
