//! `affectstream` command line: parses arguments and hands off to the library.

mod cli;
#[cfg(feature = "broker")]
mod cli_cluster;
mod demo_cli;
mod options;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::init_logging();
    match cli::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One clear line: the error and its causes, joined.
            let mut line = e.to_string();
            for cause in e.chain().skip(1) {
                let text = cause.to_string();
                if !line.contains(&text) {
                    line.push_str(": ");
                    line.push_str(&text);
                }
            }
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}
