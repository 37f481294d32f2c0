//! How results and errors reach the terminal: text by default, JSON where a machine reads it.

use clap::ValueEnum;

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// Prints an error and its causes to stderr. Configuration errors are already rendered with
/// their positions.
pub fn print_error(e: &anyhow::Error) {
    if let Some(config) = e.downcast_ref::<crate::config::diagnostic::ConfigErrors>() {
        eprint!("{config}");
        return;
    }
    eprintln!("error: {e}");
    for cause in e.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
}

/// Prints warnings to stderr.
pub fn print_warnings(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}
