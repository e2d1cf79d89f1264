//! Fuzzes the `.hdump` reader: arbitrary bytes go to `DumpView::parse`; when
//! they parse, every table is iterated, every string and stack resolved,
//! every content range read, and `verify` run. Any panic, hang or
//! out-of-bounds read is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = heapdump_formats::testing::parse_and_exercise(data);
});
