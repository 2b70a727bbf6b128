//! The assign and release loops every provider shares; a provider supplies only its requests
//! ([`Client`]): read the holder, post a move, read an action.
//!
//! assign: read the holder; ours (and no action running): done, `already_held` unless this
//! call posted. Another action running (locked, 422 "pending", 423): wait, read again.
//! Otherwise post, then poll the action until it ends; `completed` ends the call, `errored`
//! waits the errored-action backoff and reads the holder again (the action may have
//! half-happened: an IP that is ours now is never posted again). A provider that moves the
//! IP without an action to follow (Vultr) is polled through the holder instead. release is
//! the same with "not ours" as the goal, and ends once the provider accepted the move.
use std::net::IpAddr;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;
use tandem_config::Provider;
use tokio::time::Instant;

use super::budget;
use super::http::{Api, MetadataId};
use super::{
    AssignOutcome, Holder, Progress, ProviderError, Readiness, ReleaseOutcome, ReservedIpProvider,
    ServerId,
};

/// Which way the IP moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Move {
    /// To this machine.
    Assign,
    /// Off this machine.
    Unassign,
}

/// A reserved IP as the provider shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IpState {
    /// The server it is assigned to.
    pub server: Option<ServerId>,
    /// The server's name, where the provider gives it with the IP.
    pub server_name: Option<String>,
    /// An action on it is running (only DigitalOcean says so; the others refuse the next
    /// action instead).
    pub locked: bool,
    /// Its region (location).
    pub region: Option<String>,
}

impl IpState {
    fn holder(&self, me: &ServerId) -> Holder {
        Holder {
            ours: self.server.as_ref() == Some(me),
            server: self.server.clone(),
            server_name: self.server_name.clone(),
            locked: self.locked,
        }
    }
}

/// A server as the provider shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ServerInfo {
    /// Its region (location).
    pub region: Option<String>,
    /// Whether it has IPv6, when the answer says.
    pub ipv6: Option<bool>,
}

/// Where a provider action is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ActionState {
    Running,
    Completed,
    Errored,
}

/// What posting a move gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Posted {
    /// An action started (or already ended); poll it by this id.
    Action { id: String, state: ActionState },
    /// Accepted with no action to follow: the holder shows when it is done.
    NoAction,
    /// Another action on the IP is running; nothing was started.
    Busy,
}

/// The action in a `{"action": {"id": N, "status": "..."}}` answer (DigitalOcean, Hetzner),
/// its status read by `state`; an answer without both is unexpected.
pub(crate) fn action_in(
    provider: &'static str,
    what: &str,
    body: &Value,
    state: impl Fn(&str) -> Option<ActionState>,
) -> Result<(String, ActionState), ProviderError> {
    let id = body.pointer("/action/id").and_then(Value::as_u64);
    let s = body
        .pointer("/action/status")
        .and_then(Value::as_str)
        .and_then(state);
    match (id, s) {
        (Some(id), Some(s)) => Ok((id.to_string(), s)),
        _ => Err(ProviderError::Unexpected {
            provider,
            what: what.into(),
            status: 200,
            detail: "the answer holds no action id and status".into(),
            state_may_have_changed: true,
        }),
    }
}

/// Whether `net` names `ip`: an address, or a network as `address/prefix` (the prefix may come
/// separately, as Vultr's `subnet_size`). Hetzner and Vultr show a floating or reserved IPv6 as
/// its /64, and the configured address is one of it.
pub(crate) fn covers(net: &str, prefix: Option<u64>, ip: IpAddr) -> bool {
    let (addr, len) = match net.split_once('/') {
        Some((a, l)) => (a, l.parse::<u32>().ok()),
        None => (net, prefix.and_then(|p| u32::try_from(p).ok())),
    };
    let bits = |a: IpAddr| match a {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    };
    match addr.parse::<IpAddr>() {
        Ok(a) if a.is_ipv6() == ip.is_ipv6() => {
            let ((x, width), (y, _)) = (bits(a), bits(ip));
            let len = len.unwrap_or(width).min(width);
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            x & mask == y & mask
        }
        _ => false,
    }
}

/// A numeric server id as the number a JSON body carries (DigitalOcean, Hetzner).
pub(crate) fn droplet_number(id: &ServerId) -> Result<u64, ProviderError> {
    match id {
        ServerId::Numeric(n) => Ok(*n),
        ServerId::Text(t) => Err(ProviderError::Config(format!(
            "server ids are numbers here, not {t:?}"
        ))),
    }
}

/// A provider's requests; the loops here and [`ReservedIpProvider`] (implemented once for
/// every client) do the rest.
pub(crate) trait Client: Send + Sync + std::fmt::Debug {
    /// The HTTP layer and the IP this client moves.
    fn client(&self) -> (&Api, IpAddr);
    fn api(&self) -> &Api {
        self.client().0
    }
    fn ip(&self) -> IpAddr {
        self.client().1
    }
    /// Where the metadata service names this server.
    const METADATA_ID: MetadataId;
    /// This machine's server id.
    fn me(
        &self,
        deadline: Instant,
    ) -> impl Future<Output = Result<ServerId, ProviderError>> + Send {
        self.api().server_id(Self::METADATA_ID, deadline)
    }
    /// The IP as the provider shows it now.
    fn read_ip_state(
        &self,
        deadline: Instant,
    ) -> impl Future<Output = Result<IpState, ProviderError>> + Send;
    /// Server `me` as the provider shows it (its region, whether it has IPv6); reading it
    /// proves the server exists and the token may see it.
    fn server_info(
        &self,
        me: &ServerId,
        deadline: Instant,
    ) -> impl Future<Output = Result<ServerInfo, ProviderError>> + Send;
    /// Reads what the moves will need beyond the IP and the server, to find a token scope that
    /// is missing before a failover does (DigitalOcean: `actions:read` for an IPv6).
    fn check_reads(
        &self,
        _deadline: Instant,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send {
        async { Ok(()) }
    }
    /// Who holds the IP now, reported as [`Progress::Holder`].
    fn holder_at(
        &self,
        deadline: Instant,
    ) -> impl Future<Output = Result<Holder, ProviderError>> + Send {
        async move {
            let ip = self.read_ip_state(deadline).await?;
            let me = self.me(deadline).await?;
            let h = ip.holder(&me);
            self.api().progress(Progress::Holder(h.clone()));
            Ok(h)
        }
    }
    /// Posts the move; `holder` is what was read just before.
    fn post(
        &self,
        m: Move,
        me: &ServerId,
        holder: &Holder,
        what: &str,
        deadline: Instant,
    ) -> impl Future<Output = Result<Posted, ProviderError>> + Send;
    /// Reads the state of action `id`.
    fn action_state(
        &self,
        id: &str,
        what: &str,
        deadline: Instant,
    ) -> impl Future<Output = Result<ActionState, ProviderError>> + Send;
}

impl<C: Client> ReservedIpProvider for C {
    fn provider(&self) -> Provider {
        self.api().kind
    }
    fn ip(&self) -> IpAddr {
        Client::ip(self)
    }
    fn server_id(&self) -> BoxFuture<'_, Result<ServerId, ProviderError>> {
        budget::routine(self.me(self.api().deadline())).boxed()
    }
    fn holder(&self) -> BoxFuture<'_, Result<Holder, ProviderError>> {
        budget::routine(self.holder_at(self.api().deadline())).boxed()
    }
    fn assign(&self) -> BoxFuture<'_, Result<AssignOutcome, ProviderError>> {
        assign(self).boxed()
    }
    fn release(&self) -> BoxFuture<'_, Result<ReleaseOutcome, ProviderError>> {
        release(self).boxed()
    }
    fn routine_wait(&self) -> Duration {
        self.api().budget.routine_wait()
    }
    fn probe(&self) -> BoxFuture<'_, Result<Readiness, ProviderError>> {
        budget::routine(async move {
            let deadline = self.api().deadline();
            let me = self.me(deadline).await?;
            let ip = self.read_ip_state(deadline).await?;
            let server = self.server_info(&me, deadline).await?;
            let v6 = Client::ip(self);
            // A reserved IPv6 cannot be assigned to a server without IPv6 (DigitalOcean says
            // so in a 422 only at the assign; a failover would be the first to find out).
            if v6.is_ipv6() && server.ipv6 == Some(false) {
                return Err(ProviderError::NoIpv6 {
                    provider: self.api().provider,
                    server: format!("{} {me}", self.api().kind.server_noun()),
                    ip: v6,
                });
            }
            self.check_reads(deadline).await?;
            Ok(Readiness {
                ip: v6,
                region: ip.region.clone(),
                server_region: server.region,
                holder: ip.holder(&me),
                server_id: me,
            })
        })
        .boxed()
    }
}

/// One attempt's end: the move is done (with the action that did it, if any), or another
/// action was running.
enum Attempt {
    Done(Option<String>),
    NoAction,
    Busy,
}

/// Posts the move and waits for its action to end.
async fn attempt<P: Client>(
    p: &P,
    m: Move,
    me: &ServerId,
    holder: &Holder,
    what: &str,
    started: Instant,
    deadline: Instant,
) -> Result<Attempt, ProviderError> {
    let api = p.api();
    let (id, mut state) = match p.post(m, me, holder, what, deadline).await? {
        Posted::Busy => {
            api.progress(Progress::WaitingForPendingAction);
            return Ok(Attempt::Busy);
        }
        Posted::NoAction => return Ok(Attempt::NoAction),
        Posted::Action { id, state } => (id, state),
    };
    tracing::info!(provider = api.provider, ip = %p.ip(), action_id = %id, what, "action accepted");
    api.progress(Progress::Posted {
        action_id: id.clone(),
    });
    let mut delays = api.opts().poll.delays();
    while state == ActionState::Running {
        let d = api.poll_wait(delays.next());
        api.sleep_within(
            d,
            deadline,
            what,
            started,
            "the action is still in progress",
            true,
        )
        .await?;
        // The action was accepted: whatever fails now, the IP may be moving.
        state = p
            .action_state(&id, what, deadline)
            .await
            .map_err(mark_changed)?;
        if state == ActionState::Running {
            api.progress(Progress::Polling {
                action_id: id.clone(),
                elapsed: started.elapsed(),
            });
        }
    }
    if state == ActionState::Errored {
        return Err(ProviderError::ActionErrored {
            provider: api.provider,
            action_id: id,
            attempts: 1,
        });
    }
    Ok(Attempt::Done(Some(id)))
}

/// One assign or release: what it is called in messages, when it started, its deadline.
struct Call {
    what: String,
    started: Instant,
    deadline: Instant,
}

/// Moves the IP (`m`) until `goal(holder)`; see the module documentation. Returns the action
/// that did it, whether anything was posted, and how many actions ended errored.
async fn drive<P: Client>(
    p: &P,
    m: Move,
    me: &ServerId,
    call: &Call,
    mut on_holder: impl FnMut(&Holder),
    goal: impl Fn(&Holder) -> bool,
) -> Result<(Option<String>, bool, u32), ProviderError> {
    let api = p.api();
    let Call {
        what,
        started,
        deadline,
    } = call;
    let (started, deadline) = (*started, *deadline);
    let mut waits = api.opts().poll.delays();
    // Concurrent moves share the token's budget (see budget.rs).
    let _moving = api.budget.polling();
    // Set once a move was sent: a later goal is our own doing, even when the answer to that
    // POST was lost and only the holder shows it.
    let mut posted = false;
    // Set after a move with no action: only the holder can tell when it is done.
    let mut watching = false;
    let mut errored = 0;
    loop {
        let h = p.holder_at(deadline).await?;
        on_holder(&h);
        if goal(&h) {
            return Ok((None, posted, errored));
        }
        if watching {
            // Polled through the holder below.
        } else if h.locked {
            api.progress(Progress::WaitingForPendingAction);
        } else {
            posted = true;
            match attempt(p, m, me, &h, what, started, deadline).await {
                Ok(Attempt::Done(id)) => return Ok((id, true, errored)),
                Ok(Attempt::NoAction) if m == Move::Unassign => return Ok((None, true, errored)),
                Ok(Attempt::NoAction) => {
                    watching = true;
                    continue;
                }
                Ok(Attempt::Busy) => {}
                Err(ProviderError::ActionErrored { action_id, .. }) => {
                    errored += 1;
                    api.after_errored_action(what, action_id, errored, deadline)
                        .await?;
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        let last = if watching {
            "the move did not show"
        } else {
            "another action on the IP kept running"
        };
        let d = api.poll_wait(waits.next());
        api.sleep_within(d, deadline, what, started, last, watching)
            .await?;
    }
}

/// Moves the IP to this machine and waits until the provider says it is done.
pub(crate) async fn assign<P: Client>(p: &P) -> Result<AssignOutcome, ProviderError> {
    let api = p.api();
    let started = Instant::now();
    let deadline = api.deadline();
    let calls0 = api.calls();
    let me = p.me(deadline).await?;
    let call = Call {
        what: format!("assigning {} to {} {me}", p.ip(), api.kind.server_noun()),
        started,
        deadline,
    };
    let mut previous = None;
    let mut first = true;
    let on_holder = |h: &Holder| {
        if std::mem::take(&mut first) {
            previous = h.server.clone();
        }
    };
    let (action_id, posted, errored) = drive(p, Move::Assign, &me, &call, on_holder, |h| {
        h.ours && !h.locked
    })
    .await?;
    if posted {
        tracing::info!(provider = api.provider, ip = %p.ip(), server = %me, action_id = ?action_id,
            errored_actions = errored, elapsed = ?started.elapsed(), "reserved IP assigned");
    }
    Ok(AssignOutcome {
        already_held: !posted,
        previous,
        action_id,
        elapsed: started.elapsed(),
        api_calls: api.calls() - calls0,
        errored_actions: errored,
    })
}

/// Unassigns the IP if this machine holds it.
pub(crate) async fn release<P: Client>(p: &P) -> Result<ReleaseOutcome, ProviderError> {
    let api = p.api();
    let started = Instant::now();
    let deadline = api.deadline();
    let me = p.me(deadline).await?;
    let call = Call {
        what: format!("unassigning {}", p.ip()),
        started,
        deadline,
    };
    let (action_id, posted, _) = drive(p, Move::Unassign, &me, &call, |_| {}, |h| !h.ours).await?;
    if posted {
        tracing::info!(provider = api.provider, ip = %p.ip(), action_id = ?action_id,
            "reserved IP unassigned");
    }
    Ok(ReleaseOutcome {
        not_held: !posted,
        action_id,
        elapsed: started.elapsed(),
    })
}

/// A failure after an action was accepted: the IP may have moved.
fn mark_changed(e: ProviderError) -> ProviderError {
    match e {
        ProviderError::GaveUp {
            provider,
            what,
            elapsed,
            last,
            ..
        } => ProviderError::GaveUp {
            provider,
            what,
            elapsed,
            last,
            state_may_have_changed: true,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_covered_by_itself_and_by_its_network() {
        let v6: IpAddr = "2001:db8:1:2::5".parse().unwrap();
        assert!(covers("2001:db8:1:2::5", None, v6));
        assert!(covers("2001:db8:1:2::/64", None, v6));
        assert!(covers("2001:db8:1:2::", Some(64), v6));
        assert!(!covers("2001:db8:1:3::/64", None, v6));
        assert!(
            !covers("2001:db8:1:2::", None, v6),
            "no prefix: the address alone"
        );
        let v4: IpAddr = "45.55.96.8".parse().unwrap();
        assert!(covers("45.55.96.8", Some(32), v4));
        assert!(!covers("45.55.96.9", None, v4));
        assert!(!covers("2001:db8::/0", None, v4), "another family");
        assert!(!covers("not an address", None, v4));
    }
}
