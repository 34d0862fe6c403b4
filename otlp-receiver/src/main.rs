//! `otlp-receiver`: receives OTLP/HTTP traces on loopback until its standard input closes,
//! then prints them as trees (`cargo xtask demo --otlp` runs it beside the scenario).
use std::{io::Read as _, net::SocketAddr};

use clap::Parser;

/// Receive OTLP/HTTP traces (protobuf, /v1/traces) until standard input closes, then print
/// each trace as a tree.
#[derive(Parser)]
struct Args {
    /// Where to listen; port 0 picks a free one (the first line printed says which).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let receiver = otlp_receiver::Receiver::start(args.listen, otlp_receiver::Answer::Accept)?;
    println!("{}", receiver.endpoint());
    // Until the caller closes our standard input (or goes away).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    let spans = receiver.spans();
    print!("{}", otlp_receiver::render_trees(&spans));
    println!("{} spans in {} requests", spans.len(), receiver.requests());
    Ok(())
}
