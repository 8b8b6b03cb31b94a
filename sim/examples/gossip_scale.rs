//! Prints the gossip-scale figures table for a few cluster sizes.
//!
//! `cargo run -p sim --example gossip_scale -- [--crash K] [--seed S]
//! [--interval-ms MS] [--partition] [NODES...]` (default sizes 5 10 25 50,
//! 2 crashed nodes, seed 1, production timings, no partition).

use std::process::ExitCode;

use sim::gossip::{GossipScaleConfig, report_table, run_gossip_scale};

struct Options {
    sizes: Vec<usize>,
    crash: usize,
    seed: u64,
    interval_ms: Option<u64>,
    partition: bool,
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let mut figures = Vec::new();
    for &nodes in &options.sizes {
        let mut config = GossipScaleConfig::new(nodes, options.crash, options.seed);
        config.partition = options.partition;
        if let Some(interval_ms) = options.interval_ms {
            config.gossip_interval_ms = interval_ms;
        }
        match run_gossip_scale(&config) {
            Ok(run) => {
                eprintln!("{nodes} nodes done: {run:?}");
                figures.push(run);
            }
            Err(error) => {
                eprintln!("error: {nodes} nodes: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    print!("{}", report_table(&figures));
    ExitCode::SUCCESS
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        sizes: Vec::new(),
        crash: 2,
        seed: 1,
        interval_ms: None,
        partition: false,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--crash" => options.crash = number(&arg, args.next())?,
            "--seed" => options.seed = number(&arg, args.next())?,
            "--interval-ms" => options.interval_ms = Some(number(&arg, args.next())?),
            "--partition" => options.partition = true,
            size => options.sizes.push(number("NODES", Some(size.to_owned()))?),
        }
    }
    if options.sizes.is_empty() {
        options.sizes = vec![5, 10, 25, 50];
    }
    Ok(options)
}

fn number<T: std::str::FromStr>(name: &str, value: Option<String>) -> Result<T, String> {
    let value = value.ok_or_else(|| format!("{name} needs a value"))?;
    value
        .parse()
        .map_err(|_| format!("{name}: {value:?} is not a number"))
}
