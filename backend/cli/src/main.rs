//! `kalam`, the command-line client of KalamDB (see the crate's library).

fn main() -> std::process::ExitCode {
    kalam_cli::main()
}
