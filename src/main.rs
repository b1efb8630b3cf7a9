use std::process::ExitCode;

use clap::Parser;
use layerboot::cancel::{self, Cancel};
use layerboot::cli::{self, Cli};
use layerboot::errln;
use layerboot::output::{self, one_line};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help, --version and usage errors: clap's own text and exit status, but a failed
        // write to stdout is handled as for every other command (clap's exit() drops it).
        Err(e) => {
            return match e.print() {
                Ok(()) => ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2)),
                Err(io) => exit_for(&output::stdout_error(io), &Cancel::new()),
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
    // The one place signals are handled (see layerboot::cancel).
    let cancel = Cancel::new();
    let result = runtime.block_on(async {
        cancel::install(&cancel)?;
        cli::run(cli, &cancel).await
    });
    // Dropping the runtime waits for blocking tasks: whatever a cancelled command had
    // running finishes its cleanup before the process exits.
    drop(runtime);
    match result {
        Ok(code) => code,
        Err(e) => exit_for(&e, &cancel),
    }
}

/// A closed stdout ends quietly with 141 (see `layerboot::output`); any other error is
/// one line on stderr, with status 128+N after signal N (see `layerboot::cancel`), else 1.
fn exit_for(e: &anyhow::Error, cancel: &Cancel) -> ExitCode {
    if output::is_stdout_closed(e) {
        return ExitCode::from(output::STDOUT_CLOSED_STATUS);
    }
    errln!("error: {}", one_line(&format!("{e:#}")));
    match cancel.signal() {
        Some(signal) => ExitCode::from(cancel::exit_status(signal)),
        None => ExitCode::FAILURE,
    }
}
