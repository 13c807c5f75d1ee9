//! `ferricorn`: the binary is the library's [`ferricorn::cli::main`] with
//! this project's routes ([`ferricorn::app::router`]).

use std::process::ExitCode;

fn main() -> ExitCode {
    ferricorn::cli::main(ferricorn::app::router)
}
