//! A TCP proxy on 127.0.0.1 that cuts every connection after a random
//! time: the network failing under a client, for resume tests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct FlakyProxy {
    pub addr: SocketAddr,
    cuts: Arc<AtomicU64>,
    accept: JoinHandle<()>,
}

impl FlakyProxy {
    /// Forwards to `upstream`; each connection is cut after a random time
    /// between `min` and `max` (seeded by `seed`, so a run can be
    /// repeated).
    pub async fn start(upstream: SocketAddr, min: Duration, max: Duration, seed: u64) -> FlakyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let cuts = Arc::new(AtomicU64::new(0));
        let counted = cuts.clone();
        let accept = tokio::spawn(async move {
            let mut state = seed | 1;
            let span = (max.saturating_sub(min)).as_millis().max(1) as u64;
            while let Ok((client, _)) = listener.accept().await {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let life = min + Duration::from_millis(state % span);
                let counted = counted.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (mut client, mut server) = (client, server);
                    let piped = tokio::io::copy_bidirectional(&mut client, &mut server);
                    if tokio::time::timeout(life, piped).await.is_err() {
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
                    // Both sockets are dropped here: the connection is cut.
                });
            }
        });
        FlakyProxy { addr, cuts, accept }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::Relaxed)
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
