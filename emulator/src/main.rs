//! tandem-emulator: a DigitalOcean-compatible reserved-IP API on loopback for tests and the demo.
//!
//! Prints one JSON line with every bound address on stdout (and to `--ready-file`, written
//! atomically), then serves until SIGTERM or Ctrl-C.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use tandem_emulator::{DropletConfig, Emulator, EmulatorConfig, ReservedIpConfig, TokenConfig};

#[derive(Debug, Parser)]
#[command(
    name = "tandem-emulator",
    about = "DigitalOcean reserved-IP API emulator (loopback unless --listen says otherwise)"
)]
struct Args {
    /// YAML configuration (droplets, reserved_ips, tokens, action_delay, rate_limit, audit_log).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A droplet: ID:NAME[:REGION[:WEB_HOST:PORT]] (repeatable; added to the config's).
    #[arg(long = "droplet")]
    droplets: Vec<String>,
    /// A reserved IP: IP[@HOLDER_ID][/REGION] (repeatable).
    #[arg(long = "reserved-ip")]
    reserved_ips: Vec<String>,
    /// An accepted full-access token (repeatable); prefer the config file or the env variable
    /// so the token stays out of `ps`.
    #[arg(long = "token", env = "EMULATOR_TOKEN", hide_env_values = true)]
    tokens: Vec<String>,
    /// Time until an action completes (overrides the config), e.g. 200ms.
    #[arg(long, value_parser = humantime::parse_duration)]
    action_delay: Option<Duration>,
    /// JSON-lines audit log (overrides the config).
    #[arg(long)]
    audit_log: Option<PathBuf>,
    /// The address every listener binds (overrides the config), e.g. an address in a network
    /// namespace; default 127.0.0.1.
    #[arg(long)]
    listen: Option<std::net::IpAddr>,
    /// Also write the addresses JSON here (atomically: temp file + rename).
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

fn parse_droplet(s: &str) -> anyhow::Result<DropletConfig> {
    let mut parts = s.splitn(4, ':');
    let id = parts.next().unwrap_or_default();
    let id: u64 = id
        .parse()
        .with_context(|| format!("--droplet {s}: id {id:?} is not a number"))?;
    let Some(name) = parts.next().filter(|n| !n.is_empty()) else {
        bail!("--droplet {s}: expected ID:NAME[:REGION[:WEB_HOST:PORT]]");
    };
    let region = parts.next().filter(|r| !r.is_empty()).unwrap_or("nyc3");
    Ok(DropletConfig {
        id,
        name: name.into(),
        region: region.into(),
        web: parts.next().map(str::to_owned),
        public_ipv4: None,
        ipv6: true,
    })
}

fn parse_reserved_ip(s: &str) -> anyhow::Result<ReservedIpConfig> {
    let (rest, region) = match s.split_once('/') {
        Some((a, r)) => (a, r.to_owned()),
        None => (s, "nyc3".to_owned()),
    };
    let (ip, holder) = match rest.split_once('@') {
        Some((ip, h)) => (
            ip,
            Some(
                h.parse::<u64>()
                    .with_context(|| format!("--reserved-ip {s}: holder {h:?} is not a number"))?,
            ),
        ),
        None => (rest, None),
    };
    Ok(ReservedIpConfig {
        ip: ip
            .parse()
            .with_context(|| format!("--reserved-ip {s}: {ip:?} is not an IP address"))?,
        region,
        holder,
    })
}

fn write_atomically(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut cfg = match &args.config {
        Some(p) => EmulatorConfig::from_yaml_file(p)?,
        None => EmulatorConfig::default(),
    };
    for d in &args.droplets {
        cfg.droplets.push(parse_droplet(d)?);
    }
    for r in &args.reserved_ips {
        cfg.reserved_ips.push(parse_reserved_ip(r)?);
    }
    for t in &args.tokens {
        cfg.tokens.push(TokenConfig {
            token: t.clone(),
            scopes: None,
        });
    }
    if let Some(d) = args.action_delay {
        cfg.action_delay = d;
    }
    if let Some(p) = &args.audit_log {
        cfg.audit_log = Some(p.clone());
    }
    if let Some(ip) = args.listen {
        cfg.listen = ip;
    }
    let emu = Emulator::start(cfg).await?;
    let line = serde_json::to_string(&emu.addresses)?;
    println!("{line}");
    if let Some(p) = &args.ready_file {
        write_atomically(p, &format!("{line}\n"))?;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    emu.shutdown().await;
    Ok(())
}
