use clap::Parser as _;
use dad_trace::{cli::Cli, error::exit_code, tracer::signals};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Err(usage) = cli.check() {
        usage.exit();
    }
    // Before the runtime's threads exist, so they inherit it: a Ctrl-C during start-up waits
    // for the handlers instead of killing a recording that would save its session.
    if cli.command.records() {
        signals::hold();
    }
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("dad-trace: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dad_trace::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dad-trace: {e:#}");
            std::process::ExitCode::from(exit_code(&e))
        }
    }
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    // netlink-packet-route warns about every kernel attribute newer than itself: noise.
    let filter = format!("{level},netlink_packet_route=error");
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(filter)).init();
}
