//! Lets stock gRPC clients in: an HTTP/2 relay between each accepted Unix-socket connection
//! and tonic's server that makes the request's `:authority` one the server accepts.
//!
//! Over a Unix socket there is no host, and clients disagree on what to send as `:authority`:
//! Go and Node send `localhost`; Python's grpcio (grpc-core since 1.57) sends the socket path
//! percent-encoded (`%2Frun%2Ftandem%2Fagent.sock`); grpc-java and older grpcurl send the path
//! itself. The h2 server under hyper and tonic parses `:authority` as an
//! `http::uri::Authority`, which refuses `%` outside an IPv6 zone and `/`, and answers with
//! RST_STREAM(PROTOCOL_ERROR) before any service runs (h2 `server.rs`, `convert_poll_message`,
//! "malformed authority"). No h2, hyper or tonic release or setting relaxes it (the upstream
//! change, hyperium/h2#487, has been open since 2020).
//!
//! So the relay decodes the client's header blocks with h2's own frame codec, replaces an
//! authority that h2 would refuse with `localhost` (what Go and Node send), re-encodes the
//! block and hands it on. Every other frame is forwarded byte for byte, so flow control,
//! padding and settings are exactly the client's; what the server sends goes back untouched.
//! The connection's peer credentials are taken from the accepted socket, so the services'
//! authorisation sees the real caller.
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use futures::{Sink, Stream, StreamExt};
use h2::frame::{BytesStr, Frame, Head, Kind};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedReadHalf;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tonic::transport::server::{Connected, UdsConnectInfo};

/// The largest frame payload the server accepts (SETTINGS_MAX_FRAME_SIZE). `serve` sets it on
/// the server and the relay reads with it, so both refuse the same frames.
pub(super) const MAX_FRAME_SIZE: u32 = 16_384;

/// Bytes buffered per direction between the relay and the server: a few frames, so a slow
/// reader holds the writer back instead of growing memory.
const PIPE_BUFFER: usize = 64 * 1024;

/// The connection preface every HTTP/2 client sends before its first frame (RFC 9113 §3.4).
const PREFACE_LEN: usize = 24;

/// What a refused authority is replaced with: what grpc-go and grpc-node send.
const LOCALHOST: &[u8] = b"localhost";

/// The server's end of one relayed connection, carrying the client's credentials.
pub(super) struct Relayed {
    io: DuplexStream,
    info: UdsConnectInfo,
}

/// Starts relaying `client` and returns the end tonic serves.
pub(super) fn accept(client: UnixStream) -> Relayed {
    let info = client.connect_info();
    let (server_end, relay_end) = tokio::io::duplex(PIPE_BUFFER);
    tokio::spawn(relay(client, relay_end));
    Relayed {
        io: server_end,
        info,
    }
}

impl Connected for Relayed {
    type ConnectInfo = UdsConnectInfo;

    fn connect_info(&self) -> UdsConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for Relayed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Relayed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Why the relay dropped a connection (the client broke HTTP/2; the server would have too).
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("malformed HTTP/2 from the client: {0}")]
    Protocol(String),
}

async fn relay(client: UnixStream, server: DuplexStream) {
    let (client_rd, mut client_wr) = client.into_split();
    let (mut server_rd, server_wr) = tokio::io::split(server);
    let up = upstream(client_rd, server_wr);
    // The server's bytes go back untouched; its end closing ends the connection.
    let down = async {
        let _ = tokio::io::copy(&mut server_rd, &mut client_wr).await;
        let _ = client_wr.shutdown().await;
    };
    tokio::pin!(up, down);
    tokio::select! {
        result = &mut up => match result {
            // The client is done sending and the server saw the end of its input: let it
            // finish what it is sending.
            Ok(()) => down.await,
            // Dropping both ends closes the client's socket and shows the server an end
            // of input (dropping only the write half of the pipe would not).
            Err(e) => tracing::debug!(error = %e, "gRPC connection closed"),
        },
        () = &mut down => {}
    }
}

/// Client to server: the preface and every frame, header blocks re-encoded.
async fn upstream(
    mut client: OwnedReadHalf,
    mut server: impl AsyncWrite + Unpin,
) -> Result<(), RelayError> {
    let mut preface = [0; PREFACE_LEN];
    client.read_exact(&mut preface).await?;
    server.write_all(&preface).await?;
    let mut frames = FramedRead::new(client, frame_codec());
    let mut blocks = HeaderBlocks::new();
    while let Some(frame) = frames.next().await {
        let frame = frame.map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => RelayError::Protocol(e.to_string()),
            _ => RelayError::Io(e),
        })?;
        match Head::parse(&frame).kind() {
            Kind::Headers | Kind::Continuation | Kind::PushPromise => {
                if let Some(encoded) = blocks.reencode(&frame)? {
                    server.write_all(&encoded).await?;
                }
            }
            // RFC 9113 §6.10: nothing may come between a header block's frames.
            _ if blocks.partial => {
                return Err(RelayError::Protocol(
                    "a frame inside a header block".to_owned(),
                ));
            }
            _ => server.write_all(&frame).await?,
        }
    }
    server.shutdown().await?;
    Ok(())
}

/// Splits a byte stream into whole frames as h2 itself does: a 3-byte payload length, then
/// type, flags and stream id, then the payload.
fn frame_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .big_endian()
        .length_field_length(3)
        .length_adjustment(h2::frame::HEADER_LEN as isize)
        .num_skip(0)
        .max_frame_length(MAX_FRAME_SIZE as usize)
        .new_codec()
}

/// The HPACK state of one connection's requests: h2's codec decodes what the client encoded
/// (its dynamic table mirrors the client's) and encodes for the server (the server's table
/// mirrors ours). Both sides use the protocol's default table size, as the server announces
/// none.
struct HeaderBlocks {
    decoder: h2::Codec<Memory, Bytes>,
    encoder: h2::Codec<Memory, Bytes>,
    /// A HEADERS frame without END_HEADERS was read: CONTINUATION frames must follow.
    partial: bool,
}

impl HeaderBlocks {
    fn new() -> HeaderBlocks {
        HeaderBlocks {
            decoder: h2::Codec::new(Memory::default()),
            encoder: h2::Codec::new(Memory::default()),
            partial: false,
        }
    }

    /// Takes one raw HEADERS, CONTINUATION or PUSH_PROMISE frame; returns the re-encoded
    /// frames once the block is complete.
    fn reencode(&mut self, raw: &[u8]) -> Result<Option<Bytes>, RelayError> {
        // The codecs only ever touch memory, so they never wait: a no-op waker suffices.
        let mut cx = Context::from_waker(Waker::noop());
        self.decoder.get_mut().input.extend_from_slice(raw);
        let frame = match Pin::new(&mut self.decoder).poll_next(&mut cx) {
            Poll::Pending => {
                self.partial = true;
                return Ok(None);
            }
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => return Err(RelayError::Protocol(e.to_string())),
            Poll::Ready(None) => return Err(RelayError::Protocol("header block ended".into())),
        };
        self.partial = false;
        let frame = match frame {
            Frame::Headers(mut headers) => {
                let pseudo = headers.pseudo_mut();
                if pseudo
                    .authority
                    .as_ref()
                    .is_some_and(|a| a.parse::<http::uri::Authority>().is_err())
                {
                    pseudo.authority = BytesStr::try_from(Bytes::from_static(LOCALHOST)).ok();
                }
                Frame::Headers(headers)
            }
            other => other,
        };
        // Memory output never waits, so neither readiness nor the flush can be pending.
        let mut encoder = Pin::new(&mut self.encoder);
        let sent = match encoder.as_mut().poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => encoder
                .as_mut()
                .start_send(frame)
                .map_err(|e| e.to_string()),
            Poll::Ready(Err(e)) => Err(e.to_string()),
            Poll::Pending => Err("encoder not ready".to_owned()),
        }
        .and_then(|()| match encoder.as_mut().poll_flush(&mut cx) {
            Poll::Ready(result) => result.map_err(|e| e.to_string()),
            Poll::Pending => Err("encoder not flushed".to_owned()),
        });
        sent.map_err(RelayError::Protocol)?;
        Ok(Some(self.encoder.get_mut().output.split().freeze()))
    }
}

/// An in-memory stream for h2's codec: reads what was put into `input` (and waits when it is
/// empty, never reporting an end), and collects what is written in `output`.
#[derive(Default)]
struct Memory {
    input: BytesMut,
    output: BytesMut,
}

impl AsyncRead for Memory {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.input.is_empty() {
            return Poll::Pending;
        }
        let n = self.input.len().min(buf.remaining());
        buf.put_slice(&self.input[..n]);
        self.input.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Memory {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.output.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use h2::frame::{Headers, Pseudo, StreamId};
    use http::{HeaderMap, HeaderValue, Method, Uri};
    use tokio_util::codec::Decoder;

    /// A request's HEADERS frame as a client would build it, with `authority` as given.
    fn request(stream: u32, authority: &str, big: usize) -> Frame {
        let uri: Uri = "http://x/tandem.membership.v1.Membership/Status"
            .parse()
            .unwrap();
        let mut pseudo = Pseudo::request(Method::POST, uri, None);
        pseudo.authority = BytesStr::try_from(Bytes::from(authority.to_owned())).ok();
        let mut fields = HeaderMap::new();
        fields.insert("content-type", HeaderValue::from_static("application/grpc"));
        fields.insert("x-big", HeaderValue::from_str(&"a".repeat(big)).unwrap());
        let mut headers = Headers::new(StreamId::from(stream), pseudo, fields);
        headers.set_end_headers();
        Frame::Headers(headers)
    }

    /// Encodes like a client: one HPACK state across calls.
    fn encode(client: &mut h2::Codec<Memory, Bytes>, frame: Frame) -> Vec<BytesMut> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut c = Pin::new(client);
        assert!(c.as_mut().poll_ready(&mut cx).is_ready());
        c.as_mut().start_send(frame).unwrap();
        assert!(matches!(
            c.as_mut().poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        let mut bytes = c.get_mut().get_mut().output.split();
        let mut frames = Vec::new();
        while let Some(f) = frame_codec().decode(&mut bytes).unwrap() {
            frames.push(f);
        }
        assert!(bytes.is_empty());
        frames
    }

    /// Decodes like the server: one HPACK state across calls.
    fn decode(server: &mut h2::Codec<Memory, Bytes>, bytes: &[u8]) -> Headers {
        let mut cx = Context::from_waker(Waker::noop());
        server.get_mut().input.extend_from_slice(bytes);
        match Pin::new(server).poll_next(&mut cx) {
            Poll::Ready(Some(Ok(Frame::Headers(h)))) => h,
            other => panic!("expected HEADERS, got {other:?}"),
        }
    }

    fn relay_all(blocks: &mut HeaderBlocks, frames: Vec<BytesMut>) -> Bytes {
        let n = frames.len();
        let mut out = None;
        for (i, f) in frames.into_iter().enumerate() {
            let r = blocks.reencode(&f).unwrap();
            assert_eq!(
                r.is_some(),
                i + 1 == n,
                "output only once the block is complete"
            );
            out = r;
        }
        out.unwrap()
    }

    #[test]
    fn path_authorities_become_localhost_and_valid_ones_pass() {
        let mut client = h2::Codec::new(Memory::default());
        let mut server = h2::Codec::new(Memory::default());
        let mut blocks = HeaderBlocks::new();
        // Python, Java, Go, and again Python: the repeats are sent as indexes into the
        // client's dynamic table, which the relay must have mirrored.
        let cases = [
            (1, "%2Frun%2Ftandem%2Fagent.sock", "localhost"),
            (3, "/run/tandem/agent.sock", "localhost"),
            (5, "localhost", "localhost"),
            (7, "tandem.local:50051", "tandem.local:50051"),
            (9, "%2Frun%2Ftandem%2Fagent.sock", "localhost"),
            (11, "/run/tandem/agent.sock", "localhost"),
        ];
        for (stream, sent, seen) in cases {
            let frames = encode(&mut client, request(stream, sent, 10));
            let h = decode(&mut server, &relay_all(&mut blocks, frames));
            let (pseudo, fields) = h.into_parts();
            assert_eq!(pseudo.authority.as_deref(), Some(seen), "{sent}");
            assert_eq!(
                pseudo.path.as_deref(),
                Some("/tandem.membership.v1.Membership/Status")
            );
            assert_eq!(fields["content-type"], "application/grpc");
            assert_eq!(fields["x-big"], "a".repeat(10));
        }
    }

    #[test]
    fn a_block_split_over_continuation_frames_is_rejoined() {
        let mut client = h2::Codec::new(Memory::default());
        let mut server = h2::Codec::new(Memory::default());
        let mut blocks = HeaderBlocks::new();
        // 'a' takes 5 bits in HPACK's Huffman code: ~37 KB, three frames of 16 KB.
        let frames = encode(&mut client, request(1, "/s.sock", 60_000));
        assert!(frames.len() >= 3, "HEADERS and CONTINUATION frames");
        let h = decode(&mut server, &relay_all(&mut blocks, frames));
        let (pseudo, fields) = h.into_parts();
        assert_eq!(pseudo.authority.as_deref(), Some("localhost"));
        assert_eq!(fields["x-big"].len(), 60_000);
    }

    #[tokio::test]
    async fn a_frame_inside_a_header_block_ends_the_connection() {
        let mut client = h2::Codec::new(Memory::default());
        let frames = encode(&mut client, request(1, "/s.sock", 40_000));
        let mut wire = BytesMut::from(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..]);
        wire.extend_from_slice(&frames[0]);
        // A PING (type 6, stream 0, 8 bytes) where a CONTINUATION must come.
        wire.extend_from_slice(&[0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let mut peer = UnixStream::connect(&path).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        peer.write_all(&wire).await.unwrap();
        let (read, _write) = accepted.into_split();
        let mut to_server = Vec::new();
        let result = upstream(read, &mut to_server).await;
        assert!(
            matches!(&result, Err(RelayError::Protocol(m)) if m.contains("inside a header block")),
            "{result:?}"
        );
        assert_eq!(
            to_server,
            &wire[..PREFACE_LEN],
            "nothing of the block went on"
        );
    }

    #[tokio::test]
    async fn a_broken_client_connection_ends_the_servers_side_too() {
        let (mut peer, accepted) = UnixStream::pair().unwrap();
        let (mut server, relay_end) = tokio::io::duplex(PIPE_BUFFER);
        let task = tokio::spawn(relay(accepted, relay_end));
        // The preface, then a CONTINUATION that continues nothing.
        peer.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        peer.write_all(&[0, 0, 0, 9, 4, 0, 0, 0, 1]).await.unwrap();
        let mut got = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            server.read_to_end(&mut got),
        )
        .await;
        assert!(read.is_ok(), "the server never saw the end of its input");
        assert_eq!(got, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        task.await.unwrap();
        let mut rest = Vec::new();
        assert_eq!(
            peer.read_to_end(&mut rest).await.unwrap(),
            0,
            "client closed"
        );
    }
}
