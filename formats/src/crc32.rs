//! CRC-32 (the IEEE polynomial, reflected, as zlib and PNG compute it), by
//! slicing-by-8 over tables built at compile time, for the writer: it lives
//! here rather than in a dependency because the capture side must stay
//! dependency-light, and the writer feeds it small records where SIMD would
//! not pay. The reader, which checks whole sections of gigabytes, uses the
//! `crc32fast` crate; a test keeps the two in agreement.

const POLY: u32 = 0xEDB8_8320;

const fn make_tables() -> [[u32; 256]; 8] {
    let mut tables = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
            bit += 1;
        }
        tables[0][i] = crc;
        i += 1;
    }
    let mut t = 1;
    while t < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = tables[t - 1][i];
            tables[t][i] = (prev >> 8) ^ tables[0][(prev & 0xff) as usize];
            i += 1;
        }
        t += 1;
    }
    tables
}

static TABLES: [[u32; 256]; 8] = make_tables();

/// A running CRC-32. `Crc32::new().update(b"123456789").finish() == 0xCBF43926`.
#[derive(Clone, Copy, Debug)]
pub struct Crc32 {
    state: u32,
}

impl Default for Crc32 {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc32 {
    /// A CRC over no bytes yet.
    pub const fn new() -> Crc32 {
        Crc32 { state: !0 }
    }

    /// Feeds `bytes`.
    #[inline]
    pub fn update(mut self, bytes: &[u8]) -> Crc32 {
        let mut crc = self.state;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let lo = u32::from_le_bytes([word[0], word[1], word[2], word[3]]) ^ crc;
            let hi = u32::from_le_bytes([word[4], word[5], word[6], word[7]]);
            crc = TABLES[7][(lo & 0xff) as usize]
                ^ TABLES[6][((lo >> 8) & 0xff) as usize]
                ^ TABLES[5][((lo >> 16) & 0xff) as usize]
                ^ TABLES[4][(lo >> 24) as usize]
                ^ TABLES[3][(hi & 0xff) as usize]
                ^ TABLES[2][((hi >> 8) & 0xff) as usize]
                ^ TABLES[1][((hi >> 16) & 0xff) as usize]
                ^ TABLES[0][(hi >> 24) as usize];
        }
        for &byte in chunks.remainder() {
            crc = (crc >> 8) ^ TABLES[0][((crc ^ byte as u32) & 0xff) as usize];
        }
        self.state = crc;
        self
    }

    /// The checksum of everything fed so far.
    pub const fn finish(self) -> u32 {
        !self.state
    }
}

/// CRC-32 of one byte slice.
pub fn crc32(bytes: &[u8]) -> u32 {
    Crc32::new().update(bytes).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reader validates with `crc32fast`; it must agree with the
    /// writer's CRC bit for bit.
    #[cfg(feature = "read")]
    #[test]
    fn agrees_with_crc32fast_on_every_length_and_alignment() {
        let data: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for start in 0..16 {
            for end in (start..data.len()).step_by(37) {
                let bytes = &data[start..end];
                assert_eq!(crc32(bytes), crc32fast::hash(bytes), "{start}..{end}");
            }
        }
    }

    #[test]
    fn matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn incremental_updates_equal_one_shot() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 31 % 251) as u8).collect();
        for split in [0, 1, 7, 8, 9, 500, 999, 1000] {
            let (a, b) = data.split_at(split);
            assert_eq!(Crc32::new().update(a).update(b).finish(), crc32(&data));
        }
    }

    #[test]
    fn slicing_agrees_with_bitwise_definition() {
        let data: Vec<u8> = (0..257u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut crc = !0u32;
        for &byte in &data {
            crc ^= byte as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ POLY
                } else {
                    crc >> 1
                };
            }
        }
        assert_eq!(crc32(&data), !crc);
    }
}
