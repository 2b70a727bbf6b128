//! The Membership gRPC service: forwards requests to the protocol loop and streams from its
//! broadcasts.
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::Stream;
use tandem_proto::membership::v1 as pb;
use tokio::sync::{broadcast, mpsc, oneshot};
use tonic::{Request, Response, Status};

use super::{Command, ShellCounters};
use crate::core::SendError;

/// The gRPC service: forwards to the protocol loop and streams from its broadcasts.
pub(super) struct Service {
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) messages: broadcast::Sender<Arc<pb::ClusterMessage>>,
    pub(super) subscribers: Arc<Mutex<HashMap<u64, Vec<String>>>>,
    pub(super) next_subscriber: AtomicU64,
    pub(super) counters: Arc<ShellCounters>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl Service {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Status> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| Status::unavailable("membership is shutting down"))?;
        rx.await
            .map_err(|_| Status::unavailable("membership is shutting down"))
    }
}

/// Removes a Subscribe stream's topics from the registry when the stream is dropped.
struct Registration {
    id: u64,
    subscribers: Arc<Mutex<HashMap<u64, Vec<String>>>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut s) = self.subscribers.lock() {
            s.remove(&self.id);
        }
    }
}

#[tonic::async_trait]
impl pb::membership_server::Membership for Service {
    type WatchStream = BoxStream<pb::WatchResponse>;
    type SubscribeStream = BoxStream<pb::ClusterMessage>;

    async fn watch(
        &self,
        _: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (snapshot, rx) = self.ask(|reply| Command::Watch { reply }).await?;
        Ok(Response::new(watch_stream(
            snapshot,
            rx,
            self.counters.clone(),
        )))
    }

    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(
            self.ask(|reply| Command::Status { reply }).await?,
        ))
    }

    async fn send(
        &self,
        request: Request<pb::SendRequest>,
    ) -> Result<Response<pb::SendResponse>, Status> {
        let r = request.into_inner();
        let to = (!r.to.is_empty()).then_some(r.to);
        let result = self
            .ask(|reply| Command::Send {
                to,
                topic: r.topic,
                payload: r.payload,
                reply,
            })
            .await?;
        match result {
            Ok(queued_for) => Ok(Response::new(pb::SendResponse { queued_for })),
            Err(e) => Err(match e {
                SendError::Topic(_) | SendError::Payload(_) | SendError::ToSelf => {
                    Status::invalid_argument(e.to_string())
                }
                SendError::UnknownNode(_) => Status::not_found(e.to_string()),
                SendError::NotAlive(_) => Status::failed_precondition(e.to_string()),
                SendError::QueueFull(_) => Status::resource_exhausted(e.to_string()),
                SendError::Stopped => Status::unavailable(e.to_string()),
            }),
        }
    }

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let topics = request.into_inner().topics;
        let id = self.next_subscriber.fetch_add(1, Ordering::Relaxed);
        let rx = self.messages.subscribe();
        if let Ok(mut s) = self.subscribers.lock() {
            s.insert(id, topics.clone());
        }
        let registration = Registration {
            id,
            subscribers: self.subscribers.clone(),
        };
        let stream = futures::stream::unfold(Some((rx, registration)), move |state| {
            let topics = topics.clone();
            async move {
                let (mut rx, reg) = state?;
                loop {
                    match rx.recv().await {
                        Ok(m) if topics.is_empty() || topics.contains(&m.topic) => {
                            return Some((Ok(Arc::unwrap_or_clone(m)), Some((rx, reg))));
                        }
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            return Some((
                                Err(Status::resource_exhausted("subscriber too slow")),
                                None,
                            ));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The snapshot, then every event; a subscriber that fell more than [`WATCH_BUFFER`](super::WATCH_BUFFER) events
/// behind gets RESOURCE_EXHAUSTED and the stream ends (the broadcast dropped what it missed).
fn watch_stream(
    snapshot: pb::WatchResponse,
    rx: broadcast::Receiver<Arc<pb::Event>>,
    counters: Arc<ShellCounters>,
) -> BoxStream<pb::WatchResponse> {
    tandem_proto::watch::snapshot_then_events(snapshot, rx, event_response, move |_| {
        counters.watch_dropped.fetch_add(1, Ordering::Relaxed);
    })
}

fn event_response(e: pb::Event) -> pb::WatchResponse {
    pb::WatchResponse {
        kind: Some(pb::watch_response::Kind::Event(e)),
        snapshot_seq: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::WATCH_BUFFER;
    use futures::StreamExt;

    #[tokio::test]
    async fn slow_watcher_is_dropped_with_resource_exhausted_and_counted() {
        let (tx, rx) = broadcast::channel(WATCH_BUFFER);
        let counters = Arc::new(ShellCounters::default());
        let snapshot = pb::WatchResponse {
            kind: Some(pb::watch_response::Kind::Snapshot(pb::View::default())),
            snapshot_seq: 0,
        };
        let mut s = watch_stream(snapshot, rx, counters.clone());
        // The publisher never waits: it runs WATCH_BUFFER + 1 events ahead.
        for seq in 1..=WATCH_BUFFER as u64 + 1 {
            tx.send(Arc::new(pb::Event {
                seq,
                ..Default::default()
            }))
            .unwrap();
        }
        assert!(s.next().await.unwrap().is_ok(), "snapshot first");
        let err = s.next().await.unwrap().unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(s.next().await.is_none(), "stream ends");
        assert_eq!(counters.watch_dropped.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn watcher_within_the_buffer_gets_every_event_in_order() {
        let (tx, rx) = broadcast::channel(WATCH_BUFFER);
        let counters = Arc::new(ShellCounters::default());
        let mut s = watch_stream(pb::WatchResponse::default(), rx, counters.clone());
        for seq in 1..=WATCH_BUFFER as u64 {
            tx.send(Arc::new(pb::Event {
                seq,
                ..Default::default()
            }))
            .unwrap();
        }
        drop(tx);
        s.next().await.unwrap().unwrap();
        let mut seqs = Vec::new();
        while let Some(r) = s.next().await {
            match r.unwrap().kind {
                Some(pb::watch_response::Kind::Event(e)) => seqs.push(e.seq),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(seqs, (1..=WATCH_BUFFER as u64).collect::<Vec<_>>());
        assert_eq!(counters.watch_dropped.load(Ordering::Relaxed), 0);
    }
}
