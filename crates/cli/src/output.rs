//! How results and errors reach the terminal: text by default, JSON where a machine reads it.
//!
//! Results go to stdout through [`outln!`] and [`out!`], never `println!`: a reader that stops
//! early (`canary verify DIR | head -1`) closes the pipe, and `println!` would panic. Here a
//! closed stdout silently ends the output while the command finishes and keeps its exit code;
//! any other write error is remembered and turns the exit code into 1 with a message.

use std::fmt;
use std::io::{self, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::ValueEnum;

/// The reader of stdout went away: nothing more is written.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
/// The first write error other than a closed pipe.
static STDOUT_ERROR: Mutex<Option<io::Error>> = Mutex::new(None);

/// Writes to stdout (see the module docs). Use the [`out!`] and [`outln!`] macros.
pub fn write_stdout(args: fmt::Arguments<'_>, newline: bool) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = io::stdout().lock();
    let written = stdout.write_fmt(args).and_then(|()| {
        if newline {
            stdout.write_all(b"\n")
        } else {
            Ok(())
        }
    });
    if let Err(e) = written {
        record_stdout_error(e);
    }
}

/// Writes raw bytes to stdout (see the module docs).
pub fn write_stdout_bytes(bytes: &[u8]) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    if let Err(e) = io::stdout().lock().write_all(bytes) {
        record_stdout_error(e);
    }
}

fn record_stdout_error(e: io::Error) {
    if e.kind() == io::ErrorKind::BrokenPipe {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
        return;
    }
    let mut first = STDOUT_ERROR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    first.get_or_insert(e);
}

/// Flushes stdout and returns the first write error that was not a closed pipe.
pub fn stdout_error() -> Option<io::Error> {
    if !STDOUT_CLOSED.load(Ordering::Relaxed)
        && let Err(e) = io::stdout().lock().flush()
    {
        record_stdout_error(e);
    }
    STDOUT_ERROR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
}

/// Whether `e` is, or was caused by, a closed pipe on the way out: the reader stopped reading.
pub fn is_closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// `println!` for results on stdout, quiet when the reader has gone (module docs).
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*), true)
    };
}

/// `print!` for results on stdout, quiet when the reader has gone (module docs).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*), false)
    };
}

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
