//! The gRPC Agent service on `<run-dir>/agent.sock`: status for anyone who can open the
//! socket; mutating calls for root, the daemon's own user, or `agent.admin_group`.
use std::sync::Arc;

use tandem_config::{AgentConfig, ClusterConfig};
use tandem_proto::agent::v1 as pb;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::driver::Event;
use crate::core::{Command, CommandError};
use crate::metrics::Metrics;
use crate::provider;

/// The gRPC Agent service: asks the driver, checks the caller for mutating calls.
pub(super) struct AgentService {
    pub(super) tx: mpsc::Sender<Event>,
    pub(super) cfg: Arc<ClusterConfig>,
    pub(super) node: String,
    pub(super) own_uid: u32,
    pub(super) metrics: Option<Metrics>,
}

impl AgentService {
    fn authorize<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let cred = req
            .extensions()
            .get::<tonic::transport::server::UdsConnectInfo>()
            .and_then(|i| i.peer_cred);
        let Some(cred) = cred else {
            return Err(Status::permission_denied(
                "cannot identify the caller (no peer credentials)",
            ));
        };
        if cred.uid() == 0 || cred.uid() == self.own_uid {
            return Ok(());
        }
        if let Some(group) = &self.cfg.agent.admin_group
            && let Ok(Some(g)) = nix::unistd::Group::from_name(group)
        {
            if cred.gid() == g.gid.as_raw() {
                return Ok(());
            }
            let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(cred.uid()))
                .ok()
                .flatten();
            if user.is_some_and(|u| g.mem.contains(&u.name)) {
                return Ok(());
            }
        }
        let allowed = match &self.cfg.agent.admin_group {
            Some(g) => format!("root or members of group {g:?}"),
            None => "root only (no agent.admin_group configured)".to_owned(),
        };
        Err(Status::permission_denied(format!(
            "uid {} may not change the cluster: {allowed}",
            cred.uid()
        )))
    }

    async fn command(&self, cmd: Command) -> Result<String, Status> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Event::Command(cmd, reply))
            .await
            .map_err(|_| Status::unavailable("shutting down"))?;
        let result = rx.await.map_err(|_| Status::unavailable("shutting down"))?;
        result.map_err(|e| {
            let msg = e.to_string();
            match e {
                CommandError::UnknownNode(_) | CommandError::UnknownGroup(_) => {
                    Status::not_found(msg)
                }
                CommandError::NotCandidate(_)
                | CommandError::NotHeld(_)
                | CommandError::NoOtherCandidate(_) => Status::failed_precondition(msg),
                CommandError::Unreachable(_) => Status::unavailable(msg),
                CommandError::Codec(_) | CommandError::TooLarge(_) => Status::internal(msg),
            }
        })
    }
}

fn opt_node(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

type BoxStream<T> = std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

/// The snapshot, then every event; a subscriber that fell more than
/// [`super::WATCH_BUFFER`] events behind gets RESOURCE_EXHAUSTED and the stream ends.
fn watch_stream(
    snapshot: pb::WatchResponse,
    rx: broadcast::Receiver<Arc<pb::Event>>,
) -> BoxStream<pb::WatchResponse> {
    tandem_proto::watch::snapshot_then_events(snapshot, rx, event_response, |missed| {
        warn!(
            missed,
            "a watch subscriber fell too far behind; dropping it"
        );
    })
}

fn event_response(e: pb::Event) -> pb::WatchResponse {
    pb::WatchResponse {
        kind: Some(pb::watch_response::Kind::Event(e)),
        snapshot_seq: 0,
    }
}

#[tonic::async_trait]
impl pb::agent_server::Agent for AgentService {
    type WatchStream = BoxStream<pb::WatchResponse>;

    async fn watch(
        &self,
        _req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Event::Watch(reply))
            .await
            .map_err(|_| Status::unavailable("shutting down"))?;
        let (snapshot, events) = rx.await.map_err(|_| Status::unavailable("shutting down"))?;
        Ok(Response::new(watch_stream(snapshot, events)))
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Event::Status(reply))
            .await
            .map_err(|_| Status::unavailable("shutting down"))?;
        Ok(Response::new(
            rx.await.map_err(|_| Status::unavailable("shutting down"))?,
        ))
    }

    async fn standby(
        &self,
        req: Request<pb::StandbyRequest>,
    ) -> Result<Response<pb::StandbyResponse>, Status> {
        self.authorize(&req)?;
        let node = opt_node(req.into_inner().node);
        let message = self.command(Command::Standby(node.clone())).await?;
        Ok(Response::new(pb::StandbyResponse {
            node: node.unwrap_or_else(|| self.node.clone()),
            message,
        }))
    }

    async fn online(
        &self,
        req: Request<pb::OnlineRequest>,
    ) -> Result<Response<pb::OnlineResponse>, Status> {
        self.authorize(&req)?;
        let node = opt_node(req.into_inner().node);
        let message = self.command(Command::Online(node.clone())).await?;
        Ok(Response::new(pb::OnlineResponse {
            node: node.unwrap_or_else(|| self.node.clone()),
            message,
        }))
    }

    async fn takeover(
        &self,
        req: Request<pb::TakeoverRequest>,
    ) -> Result<Response<pb::TakeoverResponse>, Status> {
        self.authorize(&req)?;
        let group = req.into_inner().group;
        let message = self.command(Command::Takeover(group.clone())).await?;
        Ok(Response::new(pb::TakeoverResponse { group, message }))
    }

    async fn release(
        &self,
        req: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        self.authorize(&req)?;
        let group = req.into_inner().group;
        let message = self.command(Command::Release(group.clone())).await?;
        Ok(Response::new(pb::ReleaseResponse { group, message }))
    }

    async fn assign(
        &self,
        req: Request<pb::AssignRequest>,
    ) -> Result<Response<pb::AssignResponse>, Status> {
        self.authorize(&req)?;
        let req = req.into_inner();
        let ip: std::net::IpAddr = req
            .ip
            .parse()
            .map_err(|_| Status::invalid_argument(format!("{:?} is not an IP address", req.ip)))?;
        let agent = self
            .cfg
            .resources
            .iter()
            .flat_map(|g| &g.agents)
            .find_map(|a| match a {
                AgentConfig::ReservedIp(r) if r.ip == ip => Some(r.clone()),
                _ => None,
            })
            .ok_or_else(|| {
                Status::not_found(format!("no reserved-ip agent is configured for {ip}"))
            })?;
        let mut agent = agent;
        if req.droplet_id != 0 {
            agent.droplet_ids.clear();
            agent.droplet_id = Some(req.droplet_id);
        }
        let mut provider = provider::from_config(&agent, &self.node)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        if let Some(m) = &self.metrics {
            provider = m.provider(provider);
        }
        let droplet_id = match provider.server_id().await {
            Ok(provider::ServerId::Numeric(n)) => n,
            Ok(provider::ServerId::Text(_)) => 0,
            Err(e) => return Err(Status::failed_precondition(e.to_string())),
        };
        info!(ip = %ip, droplet_id, "assign requested by an operator, outside placement");
        let started = Instant::now();
        let out = provider.assign().await.map_err(|e| {
            if e.is_fatal() {
                Status::failed_precondition(e.to_string())
            } else {
                Status::unavailable(e.to_string())
            }
        })?;

        Ok(Response::new(pb::AssignResponse {
            ip: ip.to_string(),
            droplet_id,
            already_assigned: out.already_held,
            took: Some(tandem_proto::time::duration(started.elapsed())),
        }))
    }
}
