//! The `relay-demo` binary: a thin wrapper over [`relay_demo::cli_main`].
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    relay_demo::cli_main()
}
