#![no_main]
//! Any bytes given to the text extractor: an error is fine, a panic, hang or blow-up is a finding.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = kiln_extract::extract(kiln_extract::Format::Text, data);
});
