//! The pointer heuristics: which interior pointers count as pointers to a
//! block's start (memcheck's `--leak-check-heuristics`, for Rust's known
//! shapes), and the set of them a command enables. Below both the heap
//! graph, which marks the edges they accept, and the leak classes, which
//! count the blocks reached through those edges.
//!
//! ```
//! use heapdump_analyze::heuristics::{Heuristic, Heuristics};
//! let set: Heuristics = "rc-into-raw,tagged".parse().unwrap();
//! assert!(set.contains(Heuristic::Tagged));
//! assert_eq!(set.to_string(), "rc-into-raw,tagged");
//! // An Rc's value, 16 bytes into its block of alignment 8.
//! assert!(Heuristic::RcIntoRaw.matches(24, 8, 16, 16));
//! ```

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// A known shape of Rust interior pointer that a heuristic counts as a
/// pointer to the block's start (memcheck's `--leak-check-heuristics`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Heuristic {
    /// `HashMap`/`HashSet` (hashbrown `RawTable`): the table holds only a
    /// pointer to its control bytes, which follow the buckets in the same
    /// allocation: `[T; buckets]` padded to `ctrl_align`, then `buckets +
    /// GROUP_WIDTH` control bytes. Accepted when `n = size - offset - W` is
    /// a power of two ≥ 4 (the bucket count), `offset` is a multiple of `W`
    /// and at least `n` (every bucket holds at least a byte), and the block
    /// was allocated with an alignment of at least `W`, where `W` is the
    /// group width (16 on x86_64, 8 on aarch64).
    Hashbrown,
    /// `Rc::into_raw`/`Arc::into_raw` (and `Weak::into_raw`): a pointer to
    /// the value after the two counters, 16 bytes in, or at the block's
    /// alignment when that is larger (`offset == max(16, align)`).
    RcIntoRaw,
    /// A pointer with a tag in its low bits (`p | 1`, as in tagged-pointer
    /// enums and lock-free code): `1 <= offset <= 7` and `offset <
    /// align`, i.e. only the bits the block's alignment guarantees are zero.
    Tagged,
    /// Any interior pointer at all (a `&v[i..]` sub-slice, a field pointer).
    /// This erases the possibly-lost class: off by default.
    AnyInterior,
    /// Not an interior-pointer shape but a rule about sources: a block
    /// whose recovered type holds no pointer (a byte or string buffer, an
    /// array of numbers, a struct whose DWARF members are all numbers;
    /// [`crate::stacks::StackFrames::holds_no_pointer`]) has
    /// no out-edges, so words of data or stale words in its spare capacity
    /// keep nothing alive. Memcheck has no types and follows every word:
    /// `none` does too.
    PointerFreeTypes,
}

impl Heuristic {
    /// Every heuristic, most specific first (the order they are tried in).
    pub const ALL: [Heuristic; 5] = [
        Heuristic::Hashbrown,
        Heuristic::RcIntoRaw,
        Heuristic::Tagged,
        Heuristic::AnyInterior,
        Heuristic::PointerFreeTypes,
    ];

    /// The name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Heuristic::Hashbrown => "hashbrown",
            Heuristic::RcIntoRaw => "rc-into-raw",
            Heuristic::Tagged => "tagged",
            Heuristic::AnyInterior => "any-interior",
            Heuristic::PointerFreeTypes => "pointer-free-types",
        }
    }

    /// Whether an interior pointer `offset` bytes into a block of `size`
    /// bytes and alignment `align` has this heuristic's shape.
    /// `group_width` is hashbrown's control-group width on the dumped machine.
    pub fn matches(self, size: u64, align: u32, offset: u64, group_width: u64) -> bool {
        if offset == 0 || offset >= size {
            return false;
        }
        match self {
            Heuristic::Hashbrown => {
                let Some(n) = size
                    .checked_sub(offset)
                    .and_then(|rest| rest.checked_sub(group_width))
                else {
                    return false;
                };
                // The table is allocated with `ctrl_align = max(align_of T,
                // W)`, which also tells it apart from an Rc of 8-aligned T.
                n >= 4
                    && n.is_power_of_two()
                    && offset.is_multiple_of(group_width)
                    && offset >= n
                    && u64::from(align) >= group_width
            }
            Heuristic::RcIntoRaw => offset == 16.max(u64::from(align)),
            Heuristic::Tagged => offset <= 7 && offset < u64::from(align),
            Heuristic::AnyInterior => true,
            // Judges the source of a pointer, not its offset: applied where
            // the graph is built.
            Heuristic::PointerFreeTypes => false,
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Heuristic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of enabled heuristics.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Heuristics {
    bits: u8,
}

impl fmt::Debug for Heuristics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Heuristics({self})")
    }
}

impl Default for Heuristics {
    /// `hashbrown,rc-into-raw,tagged,pointer-free-types`: the shapes std
    /// and common crates make on purpose, so that every live `HashMap` is
    /// not reported as possibly lost, and no edge out of a block whose
    /// type holds no pointer. `any-interior` stays off: it would hide real
    /// possibly-lost blocks. (Memcheck's own default, `all`, enables its C++
    /// heuristics, none of which matches a Rust shape; `none` here gives
    /// memcheck's classification of a Rust program.)
    fn default() -> Heuristics {
        Heuristics::none()
            .with(Heuristic::Hashbrown)
            .with(Heuristic::RcIntoRaw)
            .with(Heuristic::Tagged)
            .with(Heuristic::PointerFreeTypes)
    }
}

impl Heuristics {
    /// No heuristic: every interior pointer is an interior pointer, as in
    /// memcheck on a Rust program.
    pub fn none() -> Heuristics {
        Heuristics { bits: 0 }
    }

    /// Every heuristic, `any-interior` included.
    pub fn all() -> Heuristics {
        Heuristic::ALL
            .iter()
            .fold(Heuristics::none(), |set, &h| set.with(h))
    }

    /// This set plus `h`.
    pub fn with(self, h: Heuristic) -> Heuristics {
        Heuristics {
            bits: self.bits | h.bit(),
        }
    }

    /// Whether `h` is enabled.
    pub fn contains(self, h: Heuristic) -> bool {
        self.bits & h.bit() != 0
    }

    /// The enabled heuristics, in [`Heuristic::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Heuristic> {
        Heuristic::ALL
            .into_iter()
            .filter(move |&h| self.contains(h))
    }

    /// The first enabled heuristic that accepts this interior pointer.
    #[inline]
    pub fn first_match(
        self,
        size: u64,
        align: u32,
        offset: u64,
        group_width: u64,
    ) -> Option<Heuristic> {
        if self.bits == 0 {
            return None;
        }
        self.iter()
            .find(|h| h.matches(size, align, offset, group_width))
    }
}

impl fmt::Display for Heuristics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.bits == 0 {
            return f.write_str("none");
        }
        let names: Vec<&str> = self.iter().map(Heuristic::name).collect();
        f.write_str(&names.join(","))
    }
}

impl FromStr for Heuristics {
    type Err = String;

    /// `all`, `none`, or a comma-separated list of names.
    fn from_str(s: &str) -> Result<Heuristics, String> {
        match s.trim() {
            "all" => return Ok(Heuristics::all()),
            "none" | "" => return Ok(Heuristics::none()),
            "default" => return Ok(Heuristics::default()),
            _ => {}
        }
        let mut set = Heuristics::none();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let Some(h) = Heuristic::ALL.into_iter().find(|h| h.name() == name) else {
                let known: Vec<&str> = Heuristic::ALL.iter().map(|h| h.name()).collect();
                return Err(format!(
                    "unknown heuristic `{name}`; expected all, none, default, or a list of: {}",
                    known.join(", ")
                ));
            };
            set = set.with(h);
        }
        Ok(set)
    }
}

impl Serialize for Heuristics {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heuristic_shapes() {
        assert!(Heuristic::RcIntoRaw.matches(24, 8, 16, 16));
        assert!(Heuristic::RcIntoRaw.matches(64, 32, 32, 16));
        assert!(!Heuristic::RcIntoRaw.matches(64, 32, 16, 16));
        assert!(Heuristic::Tagged.matches(16, 8, 1, 16));
        assert!(Heuristic::Tagged.matches(16, 8, 7, 16));
        assert!(!Heuristic::Tagged.matches(16, 4, 4, 16));
        assert!(!Heuristic::Tagged.matches(16, 16, 8, 16));
        assert!(Heuristic::AnyInterior.matches(100, 1, 99, 16));
        assert!(!Heuristic::AnyInterior.matches(100, 1, 0, 16));
        assert!(!Heuristic::AnyInterior.matches(100, 1, 100, 16));
    }

    #[test]
    fn heuristics_parse_like_memchecks_option() {
        assert_eq!("all".parse::<Heuristics>().unwrap(), Heuristics::all());
        assert_eq!("none".parse::<Heuristics>().unwrap(), Heuristics::none());
        let set: Heuristics = "tagged, hashbrown".parse().unwrap();
        assert_eq!(set.to_string(), "hashbrown,tagged");
        assert!(
            "vec"
                .parse::<Heuristics>()
                .unwrap_err()
                .contains("any-interior")
        );
        assert_eq!(
            Heuristics::default().to_string(),
            "hashbrown,rc-into-raw,tagged,pointer-free-types"
        );
    }
}
