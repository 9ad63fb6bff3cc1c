use std::process::ExitCode;

fn main() -> ExitCode {
    match chimera::cli::run() {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            // One line, with the whole context chain, is what scripts and users read.
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}
