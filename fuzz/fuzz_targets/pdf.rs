#![no_main]
//! Any bytes given to the pdf extractor: an error is fine, a panic, hang or blow-up is a finding.
//! The PDF engine (PDFium, a C++ library loaded at run time) is not instrumented: libFuzzer
//! steers by the Rust side's coverage only, and a crash inside the engine still shows.

libfuzzer_sys::fuzz_target!(
    init: {
        kiln_extract::pdfium::ensure(&kiln_fetch::shared_dir()).expect("the PDF engine loads");
    },
    |data: &[u8]| {
        let _ = kiln_extract::extract(kiln_extract::Format::Pdf, data);
    }
);
