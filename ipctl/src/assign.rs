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

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use tandem_config::{Provider, Secret};
use tandem_resource_agent::provider::{Options, Progress, ProviderError, ServerId, load_token};
use tokio::time::Instant;

/// `--provider`: the names of [`Provider::ALL`], each with its token variable in the help.
fn provider_parser() -> impl TypedValueParser<Value = Provider> {
    let values = Provider::ALL.map(|p| {
        PossibleValue::new(p.name()).help(format!(
            "token from ${} unless --token-file is given",
            p.token_env()
        ))
    });
    PossibleValuesParser::new(values).try_map(|s| s.parse::<Provider>())
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The reserved IP to move.
    pub ip: IpAddr,
    /// The droplet (server, instance) to move it to: a number, or a Vultr instance's UUID;
    /// default: this machine, from the metadata service.
    #[arg(long)]
    pub droplet: Option<String>,
    /// The cloud provider holding the IP. Without --token-file the API token is read from
    /// the variable its own tools read: DO_TOKEN (digitalocean), HCLOUD_TOKEN (hetzner),
    /// VULTR_API_KEY (vultr).
    #[arg(long, default_value = "digitalocean", value_parser = provider_parser())]
    pub provider: Provider,
    /// API base URL (default: the provider's).
    #[arg(long)]
    pub api_url: Option<String>,
    /// Metadata service base URL (default http://169.254.169.254).
    #[arg(long)]
    pub metadata_url: Option<String>,
    /// File holding the API token (mode 0600 or stricter); a relative name is read from
    /// $CREDENTIALS_DIRECTORY, as the agent reads it. Default: the provider's variable.
    #[arg(long, value_hint = clap::ValueHint::FilePath)]
    pub token_file: Option<PathBuf>,
    /// Give up after this long: 60s, 2m, 1m30s (a plain number is seconds).
    #[arg(long, default_value = "60s", value_parser = crate::cli::duration)]
    pub timeout: Duration,
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

/// How often the progress line on a terminal redraws its clock while nothing happens.
const TICK: Duration = Duration::from_millis(200);

/// Renders progress events on stderr, each stamped with the time since the command started.
struct ProgressLine {
    tty: bool,
    drawn: bool,
    /// The last text shown; without a terminal a repeat is not printed again.
    last: String,
    ip: IpAddr,
    noun: &'static str,
    started: Instant,
}

impl ProgressLine {
    fn show(&mut self, p: &Progress) {
        let (ip, noun) = (self.ip, self.noun);
        let text = match p {
            Progress::Holder(h) => match &h.server {
                Some(s) if h.ours => format!("{ip} is held by the target {noun} {s}"),
                Some(s) => format!("{ip} is held by {noun} {s}"),
                None => format!("{ip} is not assigned"),
            },
            Progress::WaitingForPendingAction => {
                "another action on the IP is running; waiting for it".to_owned()
            }
            Progress::Posted { action_id } => format!("action {action_id} accepted"),
            Progress::Polling { action_id, .. } => format!("action {action_id} in progress"),
            Progress::Retrying { reason, wait } => {
                format!("{reason}; retrying in {}", rounded(*wait))
            }
            Progress::RateLimited { wait } => format!("rate limited; waiting {}", rounded(*wait)),
        };
        if !self.tty && text == self.last {
            return;
        }
        self.last = text;
        self.draw();
    }

    /// On a terminal, the clock keeps running while an action is polled or waited for.
    fn tick(&mut self) {
        if self.tty && self.drawn {
            self.draw();
        }
    }

    fn draw(&mut self) {
        let t = self.started.elapsed().as_secs_f64();
        let mut err = std::io::stderr().lock();
        if self.tty {
            // Redraw one line: carriage return, clear to end of line.
            let _ = write!(err, "\r\x1b[K[{t:5.1}s] {}", self.last);
            self.drawn = true;
        } else {
            let _ = writeln!(err, "[{t:5.1}s] {}", self.last);
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

/// A duration as people read it: 350ms, 2.4s, 1m05s.
fn rounded(d: Duration) -> String {
    crate::render::human_ms(d.as_secs_f64() * 1000.0)
}

pub fn run(_cli: &crate::Cli, args: &Args) -> anyhow::Result<ExitCode> {
    let token = token(args)?;
    let kind = args.provider.server_noun();
    let line = Arc::new(Mutex::new(ProgressLine {
        tty: std::io::stderr().is_terminal(),
        drawn: false,
        last: String::new(),
        ip: args.ip,
        noun: kind,
        started: Instant::now(),
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
        deadline: args.timeout,
        progress: Some(Arc::new(move |p: &Progress| {
            if let Ok(mut l) = sink.lock() {
                l.show(p);
            }
        })),
        ..Options::default()
    };
    let provider = tandem_resource_agent::provider::new(args.provider, args.ip, token, opts)?;
    let rt = crate::control::runtime()?;
    let result = rt.block_on(async {
        let work = async {
            let target = provider.server_id().await?;
            let outcome = provider.assign().await?;
            Ok::<_, ProviderError>((target, outcome))
        };
        let clock = async {
            let mut every = tokio::time::interval(TICK);
            loop {
                every.tick().await;
                if let Ok(mut l) = line.lock() {
                    l.tick();
                }
            }
        };
        tokio::select! {
            r = work => r,
            () = clock => unreachable!("the clock never ends"),
        }
    });
    if let Ok(mut l) = line.lock() {
        l.finish();
    }
    match result {
        Ok((target, o)) if o.already_held => {
            println!(
                "{} is already held by {kind} {target}; nothing to do ({}, API calls: {})",
                args.ip,
                rounded(o.elapsed),
                o.api_calls
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok((target, o)) => {
            let was = o
                .previous
                .map_or_else(|| "unassigned".to_owned(), |p| format!("{kind} {p}"));
            println!(
                "{} is now held by {kind} {target} (was {was}); took {}, API calls: {}",
                args.ip,
                rounded(o.elapsed),
                o.api_calls
            );
            Ok(ExitCode::SUCCESS)
        }
        // A give-up already says the IP may have moved; other errors after the action was
        // accepted do not, so ipctl says it once, with what shows the holder.
        Err(e)
            if e.state_may_have_changed()
                && !matches!(
                    e,
                    ProviderError::GaveUp { .. } | ProviderError::LeftUnassigned { .. }
                ) =>
        {
            Err(anyhow::anyhow!(
                "{e}; the IP may have moved: `ipctl assign` again shows who holds it"
            ))
        }
        Err(e) => Err(e.into()),
    }
}
