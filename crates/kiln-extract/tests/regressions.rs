//! Inputs the fuzzers found (see `fixtures/README.md`): each must end as an error, not a panic.

use kiln_extract::{ExtractError, Format, extract};

#[test]
fn a_parser_panic_is_a_corrupt_file() {
    let bytes = include_bytes!("fixtures/calamine-cfb-panic.xls");
    assert!(
        matches!(extract(Format::Xls, bytes), Err(ExtractError::Corrupt(_))),
        "calamine's panic on this file must come back as Corrupt"
    );
}
