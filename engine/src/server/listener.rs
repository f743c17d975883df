//! The HTTP API's listener: every accepted connection gets TCP keep-alive, so a peer that
//! vanished is noticed, and a write timeout, so a connection whose client stopped reading
//! is closed instead of lingering with a write that never completes. (The gRPC server gets
//! the same keep-alive from tonic's own listener, and HTTP/2 pings on top.)

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpStream};
use tokio_io_timeout::TimeoutStream;

pub struct GuardedListener {
    inner: TcpListener,
    write_timeout: Duration,
    keepalive: Duration,
}

impl GuardedListener {
    pub fn new(inner: TcpListener, write_timeout: Duration, keepalive: Duration) -> Self {
        GuardedListener {
            inner,
            write_timeout,
            keepalive,
        }
    }

    fn guard(&self, stream: TcpStream) -> Pin<Box<TimeoutStream<TcpStream>>> {
        let _ = stream.set_nodelay(true);
        let keepalive = TcpKeepalive::new()
            .with_time(self.keepalive)
            .with_interval(self.keepalive);
        if let Err(error) = SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
            tracing::debug!(%error, "cannot set TCP keep-alive on a connection");
        }
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(self.write_timeout));
        Box::pin(stream)
    }
}

impl axum::serve::Listener for GuardedListener {
    type Io = Pin<Box<TimeoutStream<TcpStream>>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => return (self.guard(stream), addr),
                Err(error) => {
                    // Out of descriptors or memory: say so and let the pressure ease, as
                    // axum's own listener does.
                    tracing::warn!(%error, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}
