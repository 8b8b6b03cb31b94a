//! A `Transport` that hands out one socket opened in advance.
//!
//! `Membership::start` opens the socket itself before spawning chitchat so
//! it can learn the bound port (for `gossip_advertise_addr` port 0) and
//! report a bind failure as a typed error; chitchat then "opens" it here.

use std::net::SocketAddr;

use async_trait::async_trait;
use chitchat::transport::{Socket, Transport};
use tokio::sync::Mutex;

pub(crate) struct PreOpenedTransport {
    socket: Mutex<Option<Box<dyn Socket>>>,
}

impl PreOpenedTransport {
    pub(crate) fn new(socket: Box<dyn Socket>) -> Self {
        Self {
            socket: Mutex::new(Some(socket)),
        }
    }
}

#[async_trait]
impl Transport for PreOpenedTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        self.socket.lock().await.take().ok_or_else(|| {
            anyhow::anyhow!("gossip socket for {listen_addr} was already handed out")
        })
    }
}
