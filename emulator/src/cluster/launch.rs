//! Writing a cluster's files and starting its emulator and daemons.
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rand::Rng;

use super::{
    Cluster, Daemon, FIRST_DROPLET, LAUNCH_ATTEMPTS, LaunchError, Node, RESERVED_IP, RESERVED_IPV6,
    Spec, fence, free_loopback, io, web, yaml,
};
use crate::{DropletConfig, Emulator, EmulatorConfig, ReservedIpConfig, TokenConfig};

fn random_secret(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(rng.random_range(b'a'..=b'z')))
        .collect()
}

fn write_private(path: &Path, content: &str) -> Result<(), LaunchError> {
    std::fs::write(path, content).map_err(io(format!("writing {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io(format!("chmod {}", path.display())))
}

impl Cluster {
    /// Launches in a new temporary directory (removed on drop).
    pub async fn start(spec: Spec) -> Result<Cluster, LaunchError> {
        let dir = tempfile::Builder::new()
            .prefix("tandem-cluster-")
            .tempdir()
            .map_err(io("creating a temp dir"))?;
        let path = dir.path().to_owned();
        let mut c = Cluster::start_in(spec, &path).await?;
        // For debugging a failed suite: keep the logs and the audit log.
        if std::env::var_os("TANDEM_KEEP_CLUSTER").is_some() {
            eprintln!("cluster kept in {}", dir.keep().display());
        } else {
            c.dir = Some(dir);
        }
        Ok(c)
    }

    /// Launches in `path` (kept afterwards), retrying with new ports if a daemon could not
    /// bind the one picked for it.
    pub async fn start_in(spec: Spec, path: &Path) -> Result<Cluster, LaunchError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sub = path.join(format!("attempt-{attempt}"));
            match Cluster::launch(spec.clone(), &sub).await {
                Err(LaunchError::Daemon { ref log, .. })
                    if attempt < LAUNCH_ATTEMPTS && log.contains("in use") =>
                {
                    tracing::warn!(attempt, "a port was taken; launching again");
                }
                other => return other,
            }
        }
    }

    async fn launch(spec: Spec, path: &Path) -> Result<Cluster, LaunchError> {
        std::fs::create_dir_all(path).map_err(io(format!("creating {}", path.display())))?;
        let ip: IpAddr = RESERVED_IP
            .parse()
            .map_err(|_| LaunchError::Binaries("bad IP".into()))?;
        let key_file = path.join("authkey");
        write_private(&key_file, &random_secret(48))?;

        let count = spec.members.len() + usize::from(spec.witness.is_some());
        let net = match &spec.network {
            Some(f) => Some((f.0)(count, spec.links.max(1)).map_err(LaunchError::Network)?),
            None => None,
        };
        let mut nodes = Vec::new();
        let shared_token = format!("dop_v1_{}", random_secret(40));
        let names = spec
            .members
            .iter()
            .map(|m| (m.clone(), false))
            .chain(spec.witness.iter().map(|w| (w.clone(), true)));
        for (i, (name, witness)) in names.enumerate() {
            let dir = path.join(&name);
            std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
            let token = (!witness).then(|| match spec.shared_token {
                true => shared_token.clone(),
                false => format!("dop_v1_{}", random_secret(40)),
            });
            if let Some(t) = &token {
                write_private(&dir.join("do-token"), t)?;
            }
            let fence_token = (!witness && spec.fencing.is_some())
                .then(|| format!("dop_v1_fence_{}", random_secret(40)));
            if let Some(t) = &fence_token {
                write_private(&dir.join("fence-token"), t)?;
            }
            let addresses = match &net {
                // Each namespace has its own port space: the standard port is free.
                Some(net) => net
                    .addresses(i)
                    .into_iter()
                    .map(|a| SocketAddr::from((a, 694)))
                    .collect(),
                None => vec![free_loopback().map_err(io("binding a probe"))?],
            };
            nodes.push(Node {
                run_dir: dir.join("run"),
                state_dir: dir.join("state"),
                dir,
                address: addresses[0],
                addresses,
                droplet: (!witness).then_some(FIRST_DROPLET + i as u64),
                token,
                fence_token,
                name,
                witness,
                membership: None,
                agent: None,
                starts: [0; 2],
            });
        }

        // The tutorial's web servers, one per droplet, bound before the emulator needs them.
        let mut webs = Vec::new();
        let mut droplets = Vec::new();
        for n in nodes.iter().filter(|n| !n.witness) {
            let public = n.address.ip().to_string();
            let w = web::WebServer::start(&n.name, &public)
                .await
                .map_err(io("binding a web server"))?;
            droplets.push(DropletConfig {
                id: n.droplet.unwrap_or_default(),
                name: n.name.clone(),
                region: "nyc3".into(),
                web: Some(w.addr.to_string()),
                public_ipv4: Some(public),
                ipv6: true,
            });
            webs.push(w);
        }
        let prefer = spec
            .prefer
            .clone()
            .or_else(|| spec.members.first().cloned())
            .unwrap_or_default();
        let audit_log = path.join("emulator-audit.jsonl");
        let ipv6 = match spec.ipv6 {
            true => Some(
                RESERVED_IPV6
                    .parse::<IpAddr>()
                    .map_err(|_| LaunchError::Binaries("bad IPv6".into()))?,
            ),
            false => None,
        };
        let emulator = Emulator::start(EmulatorConfig {
            reserved_ips: std::iter::once(ip)
                .chain(ipv6)
                .chain(spec.more_ips.iter().copied())
                .map(|ip| ReservedIpConfig {
                    ip,
                    region: "nyc3".into(),
                    // As after the tutorial's first assign: the preferred droplet holds it.
                    holder: droplets
                        .iter()
                        .find(|d| spec.ip_held_at_start && d.name == prefer)
                        .map(|d| d.id),
                })
                .collect(),
            droplets,
            tokens: nodes
                .iter()
                .flat_map(|n| [n.token.clone(), n.fence_token.clone()])
                .flatten()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .map(|token| TokenConfig {
                    token,
                    scopes: None,
                })
                .collect(),
            action_delay: spec.action_delay,
            rate_limit: spec.rate_limit.clone(),
            audit_log: Some(audit_log.clone()),
            ..EmulatorConfig::default()
        })
        .await?;
        let front = emulator
            .addresses
            .fronts
            .get(&ip)
            .cloned()
            .unwrap_or_default();

        let config = path.join("cluster.yaml");
        let ips: Vec<IpAddr> = std::iter::once(ip)
            .chain(ipv6)
            .chain(spec.more_ips.iter().copied())
            .collect();
        let yaml = yaml::render_config(&spec, &nodes, &key_file, &prefer, &emulator, &ips);
        std::fs::write(&config, yaml).map_err(io("writing cluster.yaml"))?;

        let mut c = Cluster {
            spec,
            dir: None,
            path: path.to_owned(),
            config,
            emulator,
            nodes,
            ip,
            ipv6,
            front,
            audit_log,
            webs,
            net,
            pids: fence::Pids::default(),
        };
        c.pids.install(&c.emulator.world);
        for i in 0..c.nodes.len() {
            c.spawn(i, Daemon::Membership)?;
            if !c.nodes[i].witness {
                c.spawn(i, Daemon::Agent)?;
            }
        }
        for i in 0..c.nodes.len() {
            c.wait_serving(i, Daemon::Membership).await?;
            if !c.nodes[i].witness {
                c.wait_serving(i, Daemon::Agent).await?;
            }
        }
        Ok(c)
    }
}
