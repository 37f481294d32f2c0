//! Fuzzes both exposition parsers (and the history loader built on OpenMetrics) with arbitrary
//! bytes: they must never panic, and every error must point inside the input.
#![no_main]

use canary_promql::exposition::{self, Format};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for format in [Format::Text, Format::OpenMetrics] {
        if let Err(e) = exposition::parse(data, format) {
            let lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
            assert!(e.line >= 1 && e.line <= lines.len(), "{e}");
            assert!(
                e.column >= 1 && e.column <= lines[e.line - 1].len() + 1,
                "{e}"
            );
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = canary_promql::Store::from_openmetrics(text);
    }
});
