//! The format's vocabulary as named types: root and owner kinds, machines,
//! registers and every record's flags, each a newtype over the raw field
//! with its names and a `Display`, so that a reader never re-types a name
//! table or a magic number. The raw values stay in [`crate::records`]
//! (`root_kind::REGISTERS`, `process_flags::HAS_SCAN`, …), which the
//! writing side uses; these types are built on them.
//!
//! ```
//! use heapdump_formats::constants::{FlagSet, Machine, ProcessFlags, Register, RootKind};
//!
//! assert_eq!(RootKind(2).to_string(), "THREAD_STACK");
//! assert_eq!(RootKind(9).name(), None);
//! let flags = ProcessFlags(ProcessFlags::HAS_SCAN.0 | 0x100);
//! assert!(flags.contains(ProcessFlags::HAS_SCAN));
//! assert_eq!(flags.to_string(), "HAS_SCAN|0x100");
//! assert_eq!(flags.names().collect::<Vec<_>>(), ["HAS_SCAN"]);
//! assert_eq!(Register::new(Machine::X86_64, 15).to_string(), "rsp");
//! // heapdump-capture saves no registers on aarch64: no x86_64 name.
//! assert_eq!(Register::new(Machine::AARCH64, 15).to_string(), "register 15");
//! ```

use std::fmt;

use crate::records::{
    allocation_flags, edge_flags, machine, module_flags, owner_kind, process_flags, root_kind,
    segment_flags, stack_flags, thread_flags,
};

/// A family of values of one record field, each with the name FORMAT.md
/// gives it.
macro_rules! named_values {
    (
        $(#[$meta:meta])*
        pub struct $name:ident($raw:ty), unknown $unknown:literal {
            $($(#[$vmeta:meta])* $value:ident = $source:expr => $text:literal,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub $raw);

        impl $name {
            $($(#[$vmeta])* pub const $value: $name = $name($source);)*

            /// Every known value, in numeric order.
            pub const ALL: &'static [$name] = &[$($name::$value),*];

            /// The value's name, `None` for a value the format does not
            /// define.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $($name::$value => Some($text),)*
                    _ => None,
                }
            }
        }

        /// The name, or for an undefined value the words
        #[doc = concat!("`", $unknown, " N`.")]
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(name) => f.write_str(name),
                    None => write!(f, concat!($unknown, " {}"), self.0),
                }
            }
        }
    };
}

named_values! {
    /// The kind of a root ([`RootRecord::kind`](crate::records::RootRecord::kind)).
    pub struct RootKind(u16), unknown "unknown kind" {
        /// A stopped thread's saved general-purpose registers.
        REGISTERS = root_kind::REGISTERS => "REGISTERS",
        /// A thread's stack, from its stack pointer to its top.
        THREAD_STACK = root_kind::THREAD_STACK => "THREAD_STACK",
        /// A thread's static TLS block.
        STATIC_TLS = root_kind::STATIC_TLS => "STATIC_TLS",
        /// A dynamically allocated TLS block.
        DYNAMIC_TLS = root_kind::DYNAMIC_TLS => "DYNAMIC_TLS",
        /// A module's writable data (`.data`, `.bss`).
        DATA_SEGMENT = root_kind::DATA_SEGMENT => "DATA_SEGMENT",
        /// Any other range the capture side declared live.
        OTHER = root_kind::OTHER => "OTHER",
        /// Resident pages of the program's anonymous read-write memory.
        ANONYMOUS_MAPPING = root_kind::ANONYMOUS_MAPPING => "ANONYMOUS_MAPPING",
    }
}

named_values! {
    /// What a root's `owner` indexes
    /// ([`RootRecord::owner_kind`](crate::records::RootRecord::owner_kind)).
    pub struct OwnerKind(u16), unknown "unknown owner kind" {
        /// No owner.
        NONE = owner_kind::NONE => "NONE",
        /// `owner` is an index in `Threads`.
        THREAD = owner_kind::THREAD => "THREAD",
        /// `owner` is an index in `Modules`.
        MODULE = owner_kind::MODULE => "MODULE",
    }
}

named_values! {
    /// The dumped process's machine, its ELF `e_machine`
    /// ([`ProcessRecord::machine`](crate::records::ProcessRecord::machine)).
    pub struct Machine(u32), unknown "machine" {
        /// 32-bit x86 (`EM_386`).
        X86 = machine::X86 => "x86",
        /// x86_64 (`EM_X86_64`).
        X86_64 = machine::X86_64 => "x86_64",
        /// aarch64 (`EM_AARCH64`).
        AARCH64 = machine::AARCH64 => "aarch64",
    }
}

impl Machine {
    /// The width in bytes of hashbrown's control groups on this machine:
    /// 16 with SSE2 (x86, x86_64), 8 elsewhere (NEON on aarch64, the
    /// generic `u64` group). The hashbrown heuristic needs it to find a
    /// table's start from its control bytes.
    pub fn hashbrown_group_width(self) -> u64 {
        match self {
            Machine::X86 | Machine::X86_64 => 16,
            _ => 8,
        }
    }
}

/// A general-purpose register of a REGISTERS root: an edge's source offset
/// there is the register's number × 8, in the order heapdump-capture saves
/// them (x86_64's `mcontext_t` `gregs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Register {
    /// The machine whose register it is.
    pub machine: Machine,
    /// Its number in the saved set.
    pub number: u64,
}

impl Register {
    /// Register `number` of `machine`.
    pub fn new(machine: Machine, number: u64) -> Register {
        Register { machine, number }
    }

    /// The register whose slot holds the pointer at byte `offset` of a
    /// REGISTERS root; `None` for an offset between slots.
    pub fn at_offset(machine: Machine, offset: u64) -> Option<Register> {
        offset
            .is_multiple_of(8)
            .then(|| Register::new(machine, offset / 8))
    }

    /// Its name (`rsp`), `None` for machines whose registers
    /// heapdump-capture does not save (every machine but x86_64) and
    /// numbers past the table.
    pub fn name(self) -> Option<&'static str> {
        const X86_64_GREGS: [&str; 23] = [
            "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rdi", "rsi", "rbp", "rbx",
            "rdx", "rax", "rcx", "rsp", "rip", "eflags", "csgsfs", "err", "trapno", "oldmask",
            "cr2",
        ];
        match self.machine {
            Machine::X86_64 => X86_64_GREGS
                .get(usize::try_from(self.number).ok()?)
                .copied(),
            _ => None,
        }
    }
}

/// Its name, else `register N`.
impl fmt::Display for Register {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "register {}", self.number),
        }
    }
}

/// What every flags type has: its flags' names, and the bits set that the
/// format does not define.
pub trait FlagSet: Copy + 'static {
    /// Every defined flag with its name, lowest bit first.
    const NAMED: &'static [(Self, &'static str)];

    /// The raw field.
    fn bits(self) -> u32;

    /// The names of the defined flags that are set, lowest bit first.
    fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMED
            .iter()
            .filter(move |(flag, _)| self.bits() & flag.bits() == flag.bits())
            .map(|&(_, name)| name)
    }

    /// The bits set that the format does not define (0: none).
    fn unknown_bits(self) -> u32 {
        let known = Self::NAMED
            .iter()
            .fold(0, |bits, (flag, _)| bits | flag.bits());
        self.bits() & !known
    }
}

/// The bit flags of one record field, each with the name FORMAT.md gives
/// it.
macro_rules! flag_set {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($(#[$vmeta:meta])* $flag:ident = $source:expr,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub struct $name(pub u32);

        impl $name {
            $($(#[$vmeta])* pub const $flag: $name = $name($source);)*

            /// Whether every bit of `flags` is set.
            pub fn contains(self, flags: $name) -> bool {
                self.0 & flags.0 == flags.0
            }
        }

        impl FlagSet for $name {
            const NAMED: &'static [($name, &'static str)] =
                &[$(($name::$flag, stringify!($flag))),*];

            fn bits(self) -> u32 {
                self.0
            }
        }

        /// The names of the flags set, `|`-separated, then the undefined
        /// bits in hex (`HAS_SCAN|0x100`); `0` when none is set.
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut separator = "";
                for name in self.names() {
                    write!(f, "{separator}{name}")?;
                    separator = "|";
                }
                match self.unknown_bits() {
                    0 if separator.is_empty() => f.write_str("0"),
                    0 => Ok(()),
                    unknown => write!(f, "{separator}{unknown:#x}"),
                }
            }
        }
    };
}

flag_set! {
    /// [`ProcessRecord::flags`](crate::records::ProcessRecord::flags); the
    /// meaning of each is at [`process_flags`].
    pub struct ProcessFlags {
        HAS_CONTENTS = process_flags::HAS_CONTENTS,
        HAS_SCAN = process_flags::HAS_SCAN,
        WORLD_STOPPED = process_flags::WORLD_STOPPED,
        INCOMPLETE_STOP = process_flags::INCOMPLETE_STOP,
        DROPPED_RECORDS = process_flags::DROPPED_RECORDS,
        FORKED = process_flags::FORKED,
        FORK_FAILED = process_flags::FORK_FAILED,
        MEMORY_NOT_FORKED = process_flags::MEMORY_NOT_FORKED,
    }
}

flag_set! {
    /// [`ThreadRecord::flags`](crate::records::ThreadRecord::flags); the
    /// meaning of each is at [`thread_flags`].
    pub struct ThreadFlags {
        ALIVE = thread_flags::ALIVE,
        DUMPING = thread_flags::DUMPING,
        MAIN = thread_flags::MAIN,
        STOPPED = thread_flags::STOPPED,
        NOT_STOPPED = thread_flags::NOT_STOPPED,
    }
}

flag_set! {
    /// [`ModuleRecord::flags`](crate::records::ModuleRecord::flags); the
    /// meaning of each is at [`module_flags`].
    pub struct ModuleFlags {
        MAIN_EXECUTABLE = module_flags::MAIN_EXECUTABLE,
        VDSO = module_flags::VDSO,
    }
}

flag_set! {
    /// [`SegmentRecord::flags`](crate::records::SegmentRecord::flags); the
    /// meaning of each is at [`segment_flags`].
    pub struct SegmentFlags {
        EXECUTE = segment_flags::EXECUTE,
        WRITE = segment_flags::WRITE,
        READ = segment_flags::READ,
    }
}

flag_set! {
    /// [`AllocationRecord::flags`](crate::records::AllocationRecord::flags);
    /// the meaning of each is at [`allocation_flags`].
    pub struct AllocationFlags {
        ZEROED = allocation_flags::ZEROED,
        REALLOCATED = allocation_flags::REALLOCATED,
        SAMPLED = allocation_flags::SAMPLED,
        UNRECORDED = allocation_flags::UNRECORDED,
    }
}

flag_set! {
    /// [`StackRecord::flags`](crate::records::StackRecord::flags); the
    /// meaning of each is at [`stack_flags`].
    pub struct StackFlags {
        TRUNCATED = stack_flags::TRUNCATED,
        CFI = stack_flags::CFI,
    }
}

flag_set! {
    /// [`EdgeRecord::flags`](crate::records::EdgeRecord::flags); the
    /// meaning of each is at [`edge_flags`].
    pub struct EdgeFlags {
        FROM_ROOT = edge_flags::FROM_ROOT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_owner_kinds_are_named_as_format_md_spells_them() {
        let names: Vec<String> = RootKind::ALL.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "REGISTERS",
                "THREAD_STACK",
                "STATIC_TLS",
                "DYNAMIC_TLS",
                "DATA_SEGMENT",
                "OTHER",
                "ANONYMOUS_MAPPING"
            ]
        );
        assert_eq!(RootKind(0).to_string(), "unknown kind 0");
        assert_eq!(OwnerKind(1).to_string(), "THREAD");
        assert_eq!(OwnerKind(9).name(), None);
    }

    #[test]
    fn registers_are_named_only_on_x86_64() {
        assert_eq!(Register::new(Machine::X86_64, 0).name(), Some("r8"));
        assert_eq!(Register::new(Machine::X86_64, 22).name(), Some("cr2"));
        assert_eq!(
            Register::new(Machine::X86_64, 23).to_string(),
            "register 23"
        );
        assert_eq!(Register::new(Machine::AARCH64, 15).name(), None);
        assert_eq!(
            Register::new(Machine::AARCH64, 15).to_string(),
            "register 15"
        );
        assert_eq!(
            Register::at_offset(Machine::X86_64, 0x78),
            Some(Register::new(Machine::X86_64, 15))
        );
        assert_eq!(Register::at_offset(Machine::X86_64, 0x7c), None);
    }

    #[test]
    fn registers_are_named_on_x86_64_only_and_within_its_gregs() {
        let register_name = |machine, number| Register::new(Machine(machine), number).name();
        assert_eq!(register_name(machine::X86_64, 0), Some("r8"));
        assert_eq!(register_name(machine::X86_64, 15), Some("rsp"));
        assert_eq!(register_name(machine::X86_64, 22), Some("cr2"));
        assert_eq!(register_name(machine::X86_64, 23), None);
        assert_eq!(register_name(machine::X86_64, u64::MAX), None);
        // aarch64 dumps carry no saved registers: no x86_64 names for them.
        assert_eq!(register_name(machine::AARCH64, 15), None);
    }

    #[test]
    fn machines_know_their_hashbrown_group_width() {
        assert_eq!(Machine::X86_64.hashbrown_group_width(), 16);
        assert_eq!(Machine::X86.hashbrown_group_width(), 16);
        assert_eq!(Machine::AARCH64.hashbrown_group_width(), 8);
        assert_eq!(Machine(0).to_string(), "machine 0");
    }

    #[test]
    fn flags_name_their_bits_and_show_undefined_ones_in_hex() {
        let flags = ProcessFlags(0x05 | 0x100);
        assert_eq!(
            flags.names().collect::<Vec<_>>(),
            ["HAS_CONTENTS", "WORLD_STOPPED"]
        );
        assert_eq!(flags.unknown_bits(), 0x100);
        assert_eq!(flags.to_string(), "HAS_CONTENTS|WORLD_STOPPED|0x100");
        assert_eq!(ThreadFlags::default().to_string(), "0");
        assert_eq!(ModuleFlags(0x10).to_string(), "0x10");
        assert!(StackFlags(3).contains(StackFlags::CFI));
        assert!(!EdgeFlags(0).contains(EdgeFlags::FROM_ROOT));
    }
}
