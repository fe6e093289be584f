#![no_main]
//! Any bytes given to the xls extractor: an error is fine, a hang or blow-up is a finding.
//!
//! calamine panics on some broken compound files (tests/fixtures/calamine-cfb-panic.xls in
//! kiln-extract); `extract` turns that into an error, so the fuzzer's abort-on-panic hook is
//! replaced here to keep searching past it.

libfuzzer_sys::fuzz_target!(
    init: {
        std::panic::set_hook(Box::new(|_| {}));
    },
    |data: &[u8]| {
        let _ = kiln_extract::extract(kiln_extract::Format::Xls, data);
    }
);
