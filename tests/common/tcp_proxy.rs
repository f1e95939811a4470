//! A TCP proxy that injects network faults between a client and a real server: cut
//! every open connection, stall traffic, or slow it down. Fault tests use it instead of
//! server-specific tricks (`KILL`), so they run against any server.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What the proxy does with the bytes it forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward at once.
    Pass,
    /// Hold every byte until the mode changes (the connections stay open).
    Stall,
    /// Wait this long before forwarding each chunk read.
    Slow(Duration),
}

struct Shared {
    upstream: String,
    mode: watch::Sender<Mode>,
    /// Cancelled by [`FaultProxy::cut`]; replaced by a fresh token for later connections.
    generation: Mutex<CancellationToken>,
    accepted: AtomicUsize,
}

/// A running proxy; stopped when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream` (`host:port`).
    pub async fn start(upstream: impl Into<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream: upstream.into(),
            mode: watch::Sender::new(Mode::Pass),
            generation: Mutex::new(CancellationToken::new()),
            accepted: AtomicUsize::new(0),
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, shared.clone(), stop.clone()));
        Self { addr, shared, stop }
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Sets how bytes are forwarded from now on.
    pub fn set_mode(&self, mode: Mode) {
        self.shared.mode.send_replace(mode);
    }

    /// Closes every open connection (both sides see the socket close); new
    /// connections are forwarded again.
    pub fn cut(&self) {
        let mut generation = self
            .shared
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        generation.cancel();
        *generation = CancellationToken::new();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((client, _)) = accepted else { continue };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let token = shared
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(&shared.upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let up = pump(
                client_read,
                server_write,
                shared.mode.subscribe(),
                token.clone(),
            );
            let down = pump(
                server_read,
                client_write,
                shared.mode.subscribe(),
                token.clone(),
            );
            // Either direction ending closes both: the halves are dropped together.
            tokio::select! {
                () = up => {}
                () = down => {}
                () = token.cancelled() => {}
            }
        });
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    token: CancellationToken,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            () = token.cancelled() => return,
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
        };
        loop {
            let current = *mode.borrow_and_update();
            match current {
                Mode::Pass => break,
                Mode::Slow(delay) => {
                    tokio::select! {
                        () = token.cancelled() => return,
                        () = tokio::time::sleep(delay) => break,
                    }
                }
                Mode::Stall => {
                    tokio::select! {
                        () = token.cancelled() => return,
                        changed = mode.changed() => if changed.is_err() { return },
                    }
                }
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
