use std::process::ExitCode;

use clap::Parser;
use layerboot::cli::{self, Cli};
use layerboot::{errln, output};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help, --version and usage errors: clap's own text and exit status, but a failed
        // write to stdout is handled as for every other command (clap's exit() drops it).
        Err(e) => {
            return match e.print() {
                Ok(()) => ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2)),
                Err(io) => exit_for(&output::stdout_error(io)),
            }
        }
    };
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            errln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(e) => exit_for(&e),
    }
}

/// A closed stdout ends quietly with 141 (see `layerboot::output`); any other error is
/// one line on stderr and status 1.
fn exit_for(e: &anyhow::Error) -> ExitCode {
    if output::is_stdout_closed(e) {
        return ExitCode::from(output::STDOUT_CLOSED_STATUS);
    }
    errln!("error: {e:#}");
    ExitCode::FAILURE
}
