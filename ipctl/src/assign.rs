//! `ipctl assign`: move a reserved IP to a droplet now, as DigitalOcean's `assign-ip` script
//! does, but waiting for the action to finish, retrying transient failures and saying why it
//! failed. Progress goes to stderr (one line redrawn in place on a terminal, plain lines
//! otherwise); the result goes to stdout.
use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use tandem_config::{Provider, Secret};
use tandem_resource_agent::provider::{Options, Progress, ServerId, load_token};

/// `--provider`: the names of [`Provider::ALL`].
fn provider_parser() -> impl TypedValueParser<Value = Provider> {
    PossibleValuesParser::new(Provider::ALL.map(Provider::name)).try_map(|s| s.parse::<Provider>())
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The reserved IP to move.
    pub ip: IpAddr,
    /// The droplet (server, instance) to move it to: a number, or a Vultr instance's UUID;
    /// default: this machine, from the metadata service.
    #[arg(long)]
    pub droplet: Option<String>,
    /// The provider holding the IP; the token is read from its variable when no --token-file
    /// is given: DO_TOKEN (digitalocean), HCLOUD_TOKEN (hetzner), VULTR_API_KEY (vultr).
    #[arg(long, default_value = "digitalocean", value_parser = provider_parser())]
    pub provider: Provider,
    /// API base URL (default: the provider's).
    #[arg(long)]
    pub api_url: Option<String>,
    /// Metadata service base URL (default http://169.254.169.254).
    #[arg(long)]
    pub metadata_url: Option<String>,
    /// File holding the API token (mode 0600 or stricter); default: the provider's variable.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
}

/// The token from `--token-file`, else from the provider's variable (the one its own tools
/// read: DigitalOcean's `assign-ip` script reads `DO_TOKEN`).
fn token(args: &Args) -> anyhow::Result<Secret> {
    if let Some(f) = &args.token_file {
        return Ok(load_token(f)?);
    }
    let var = args.provider.token_env();
    match std::env::var(var) {
        Ok(t) if !t.trim().is_empty() => Ok(Secret::new(t.trim().as_bytes().to_vec())),
        _ => anyhow::bail!("no API token: pass --token-file FILE or set {var}"),
    }
}

/// `--droplet` as the provider names servers.
fn server_id(provider: Provider, arg: &str) -> anyhow::Result<ServerId> {
    if !provider.numeric_server_ids() {
        return Ok(ServerId::Text(arg.to_owned()));
    }
    arg.parse().map(ServerId::Numeric).map_err(|_| {
        anyhow::anyhow!(
            "--droplet {arg:?}: a {} id is a number",
            provider.server_noun()
        )
    })
}

/// Renders progress events on stderr.
struct ProgressLine {
    tty: bool,
    drawn: bool,
    /// The last text shown; without a terminal a repeat is not printed again.
    last: String,
    ip: IpAddr,
    started: tokio::time::Instant,
}

impl ProgressLine {
    fn show(&mut self, p: &Progress) {
        let t = self.started.elapsed().as_secs_f64();
        let text = match p {
            Progress::Holder(h) => match &h.server {
                Some(s) if h.ours => format!("{} is held by the target droplet {s}", self.ip),
                Some(s) => format!("{} is held by droplet {s}", self.ip),
                None => format!("{} is not assigned", self.ip),
            },
            Progress::WaitingForPendingAction => {
                "another action on the IP is running; waiting for it".to_owned()
            }
            Progress::Posted { action_id } => format!("action {action_id} accepted"),
            Progress::Polling { action_id, .. } => format!("action {action_id} in progress"),
            Progress::Retrying { reason, wait } => {
                format!("{reason}; retrying in {:.1}s", wait.as_secs_f64())
            }
            Progress::RateLimited { wait } => {
                format!("rate limited; waiting {:.1}s", wait.as_secs_f64())
            }
        };
        if !self.tty && text == self.last {
            return;
        }
        self.last.clone_from(&text);
        let mut err = std::io::stderr().lock();
        if self.tty {
            // Redraw one line: carriage return, clear to end of line.
            let _ = write!(err, "\r\x1b[K[{t:5.1}s] {text}");
            self.drawn = true;
        } else {
            let _ = writeln!(err, "[{t:5.1}s] {text}");
        }
        let _ = err.flush();
    }

    fn finish(&mut self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
            self.drawn = false;
        }
    }
}

pub fn run(_cli: &crate::Cli, args: &Args) -> anyhow::Result<ExitCode> {
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        anyhow::bail!("--timeout must be a positive number of seconds");
    }
    let token = token(args)?;
    let started = tokio::time::Instant::now();
    let line = Arc::new(Mutex::new(ProgressLine {
        tty: std::io::stderr().is_terminal(),
        drawn: false,
        last: String::new(),
        ip: args.ip,
        started,
    }));
    let sink = line.clone();
    let opts = Options {
        api_url: args.api_url.clone(),
        metadata_url: args.metadata_url.clone(),
        server_id: args
            .droplet
            .as_deref()
            .map(|d| server_id(args.provider, d))
            .transpose()?,
        deadline: Duration::from_secs_f64(args.timeout),
        progress: Some(Arc::new(move |p: &Progress| {
            if let Ok(mut l) = sink.lock() {
                l.show(p);
            }
        })),
        ..Options::default()
    };
    let provider = tandem_resource_agent::provider::new(args.provider, args.ip, token, opts)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = rt.block_on(async {
        let target = provider.server_id().await?;
        let outcome = provider.assign().await?;
        Ok::<_, tandem_resource_agent::provider::ProviderError>((target, outcome))
    });
    if let Ok(mut l) = line.lock() {
        l.finish();
    }
    let kind = args.provider.server_noun();
    match result {
        Ok((target, o)) if o.already_held => {
            println!(
                "{} is already held by {kind} {target}; nothing to do ({:.2}s, API calls: {})",
                args.ip,
                o.elapsed.as_secs_f64(),
                o.api_calls
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok((target, o)) => {
            let was = o
                .previous
                .map_or_else(|| "unassigned".to_owned(), |p| format!("{kind} {p}"));
            println!(
                "{} is now held by {kind} {target} (was {was}); took {:.2}s, API calls: {}",
                args.ip,
                o.elapsed.as_secs_f64(),
                o.api_calls
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let hint = if e.state_may_have_changed() {
                "; run `ipctl assign` again to see who holds it"
            } else {
                ""
            };
            Err(anyhow::anyhow!("{e}{hint}"))
        }
    }
}
