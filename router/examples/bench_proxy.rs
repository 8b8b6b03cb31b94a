//! Serves one environment's committed state through the router, with the
//! instances given on the command line: the "through our router" leg of
//! `scripts/bench-router.sh`, pointing at the same instances nginx uses.
//!
//! Usage: bench_proxy <environment.json> <listen addr> <revision-id>=<addr>...

use std::collections::HashMap;
use std::net::SocketAddr;

use deploy::ids::RevisionId;
use deploy::state::EnvironmentState;
use router::RouteTable;
use router::proxy::{Instance, ProxyConfig, Published, Router};
use router::sticky::StickyKey;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err(
            "usage: bench_proxy <environment.json> <listen addr> <revision-id>=<addr>...".into(),
        );
    }
    let state: EnvironmentState = serde_json::from_slice(&std::fs::read(&args[1])?)?;
    let listen: SocketAddr = args[2].parse()?;
    let mut instances: HashMap<RevisionId, Vec<std::sync::Arc<Instance>>> = HashMap::new();
    for pair in &args[3..] {
        let (revision, addr) = pair
            .split_once('=')
            .ok_or("instances are <revision-id>=<addr>")?;
        instances
            .entry(revision.parse()?)
            .or_default()
            .push(Instance::new(addr.parse()?));
    }
    let published = Published {
        table: RouteTable::build(&state),
        instances,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let router = Router::new(published, StickyKey::new([7; 32]), ProxyConfig::default());
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        println!("listening on {}", listener.local_addr()?);
        router.serve(listener, stopped).await;
        Ok(())
    })
}
