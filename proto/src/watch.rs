//! The shape both daemons' `Watch` streams share.
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::broadcast;
use tonic::Status;

/// A server stream of `T`, as tonic's generated service traits take it.
pub type WatchStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// `snapshot`, then every event of `rx` in order, each made a response by `response`. A
/// subscriber that fell further behind than the broadcast holds gets RESOURCE_EXHAUSTED
/// (after `lagged` is told how many it missed) and its stream ends: the broadcast has dropped
/// what it missed, and going on would skip events silently.
pub fn snapshot_then_events<E, T>(
    snapshot: T,
    rx: broadcast::Receiver<Arc<E>>,
    response: fn(E) -> T,
    lagged: impl Fn(u64) + Send + Sync + 'static,
) -> WatchStream<T>
where
    E: Clone + Send + Sync + 'static,
    T: Send + 'static,
{
    let lagged = Arc::new(lagged);
    let events = futures::stream::unfold(Some(rx), move |rx| {
        let lagged = lagged.clone();
        async move {
            let mut rx = rx?;
            match rx.recv().await {
                Ok(e) => Some((Ok(response(Arc::unwrap_or_clone(e))), Some(rx))),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    lagged(n);
                    Some((
                        Err(Status::resource_exhausted("watch subscriber too slow")),
                        None,
                    ))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        }
    });
    Box::pin(futures::StreamExt::chain(
        futures::stream::once(async { Ok(snapshot) }),
        events,
    ))
}
