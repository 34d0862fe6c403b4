use clap::Parser as _;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    let cli = dad_trace::cli::Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    // netlink-packet-route warns about every kernel attribute newer than itself: noise.
    let filter = format!("{level},netlink_packet_route=error");
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(filter)).init();
    match dad_trace::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dad-trace: {e:#}");
            std::process::ExitCode::from(dad_trace::cli::exit_code(&e))
        }
    }
}
