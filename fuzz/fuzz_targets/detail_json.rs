//! Arbitrary UTF-8 through `check_detail_json`, compared with the reference
//! the emulator uses: `serde_json::from_str::<serde_json::Value>` and
//! `is_object`. Both must accept the same texts.
//!
//! Inputs the reference refuses for nesting deeper than serde_json's
//! recursion limit (128) are skipped: `check_detail_json` parses into
//! `IgnoredAny`, which serde_json skips with an explicit stack and no depth
//! limit, so it accepts any depth.
//!
//! Known differences, tolerated here and reported: `check_detail_json`
//! (`IgnoredAny`) accepts, and the `Value` reference refuses,
//! - numbers outside the f64 range (`{"a":1e400}`): `IgnoredAny` checks the
//!   grammar only;
//! - `\u` escapes that are lone or broken UTF-16 surrogates
//!   (`{"a":"\ud800"}`): `IgnoredAny` does not decode them.
//!
//! Set `DETAIL_JSON_STRICT=1` to fail on these too.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use partner_events_gateway::domain::entry::check_detail_json;

/// Messages of reference errors for the tolerated differences.
const KNOWN_DIFFERENCES: [&str; 4] = [
    "number out of range",
    "lone leading surrogate in hex escape",
    "unexpected end of hex escape",
    "invalid unicode code point",
];

fn strict() -> bool {
    static STRICT: OnceLock<bool> = OnceLock::new();
    *STRICT.get_or_init(|| std::env::var_os("DETAIL_JSON_STRICT").is_some_and(|v| v == "1"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ours = check_detail_json(text);
    let reference = serde_json::from_str::<serde_json::Value>(text);
    let reference_ok = match &reference {
        Ok(v) => v.is_object(),
        Err(e) if e.to_string().contains("recursion limit exceeded") => return,
        Err(_) => false,
    };
    if ours.is_ok() == reference_ok {
        return;
    }
    if let (Ok(()), Err(e)) = (&ours, &reference) {
        let message = e.to_string();
        if !strict() && KNOWN_DIFFERENCES.iter().any(|k| message.contains(k)) {
            return;
        }
    }
    panic!(
        "check_detail_json and serde_json::Value disagree on {text:?}: \
         check_detail_json={ours:?} Value={:?}",
        reference.map(|v| v.is_object())
    );
});
