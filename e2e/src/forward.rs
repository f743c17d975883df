//! A TCP forwarder: how a real node reaches the API server.
//!
//! The control plane listens on 127.0.0.1, which inside the node's network namespace is the
//! node itself. So the harness listens on the host's end of the node's link and copies bytes
//! to the API server: the kubelet and kube-proxy dial that address, and pods dial the
//! `kubernetes` Service, whose endpoint it is. TLS stays end to end (clients check the
//! certificate against a name it carries).

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::Error;
use crate::background::Background;

/// Forwards every connection to `listen` to `to` until dropped.
pub struct Forwarder {
    _runtime: Background,
}

impl Forwarder {
    pub fn start(listen: SocketAddr, to: SocketAddr) -> Result<Self, Error> {
        let listener = std::net::TcpListener::bind(listen)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| Error::io(&format!("listening on {listen} to forward to {to}"), e))?;
        let runtime = Background::start("forwarder")?;
        runtime.spawn(async move {
            let listener = match TcpListener::from_std(listener) {
                Ok(listener) => listener,
                Err(err) => {
                    tracing::warn!(error = %err, %listen, "the forwarder cannot listen");
                    return;
                }
            };
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((client, _)) => {
                            connections.spawn(forward(client, to));
                        }
                        Err(err) => tracing::warn!(error = %err, %listen, "accepting a connection failed"),
                    },
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        // Dropping the runtime drops the listener and every connection.
        Ok(Self { _runtime: runtime })
    }
}

async fn forward(mut client: TcpStream, to: SocketAddr) {
    match TcpStream::connect(to).await {
        Ok(mut server) => {
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        }
        Err(err) => tracing::warn!(error = %err, %to, "reaching the forwarded address failed"),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn bytes_go_through_both_ways() {
        let server = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let to = server.local_addr().expect("address");
        tokio::spawn(async move {
            let (mut stream, _) = server.accept().await.expect("accept");
            let mut buf = [0u8; 5];
            stream.read_exact(&mut buf).await.expect("read");
            stream
                .write_all(&buf.map(|b| b.to_ascii_uppercase()))
                .await
                .expect("write");
        });
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let listen = free.local_addr().expect("address");
        drop(free);
        let forwarder = Forwarder::start(listen, to).expect("forwarder");
        let mut client = TcpStream::connect(listen).await.expect("connect");
        client.write_all(b"hello").await.expect("write");
        let mut answer = [0u8; 5];
        client.read_exact(&mut answer).await.expect("read");
        assert_eq!(&answer, b"HELLO");
        drop(forwarder);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            TcpStream::connect(listen).await.is_err(),
            "closed once dropped"
        );
    }
}
