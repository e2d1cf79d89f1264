//! Fuzzes the `.hdump` reader: arbitrary bytes go to `DumpView::parse`; when
//! they parse, every table is iterated, every string and stack resolved,
//! every content range read, and `verify` run. The same bytes are then tried
//! again with every checksum recomputed (`testing::reseal`), since a random
//! mutation almost never keeps the CRCs right and would otherwise stop at
//! them. Any panic, hang or out-of-bounds read is a bug.
#![no_main]

use heapdump_formats::testing::{parse_and_exercise, reseal};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_and_exercise(data);
    let _ = parse_and_exercise(&reseal(data));
});
