//! `heapdump topprof`: live memory as a gzipped pprof profile
//! (`profile.proto`), the format `go tool pprof`, its web UI, Pyroscope
//! and speedscope read. `analyze/EXPORTS.md` documents the mapping.
//!
//! - Sample types `inuse_objects`/`count` and `inuse_space`/`bytes` (the
//!   names Go's heap profiles use, so pprof's options for them apply);
//!   `inuse_space` is the default.
//! - One sample per distinct stack, frames as `top` sees them
//!   ([`HeapModel::profile_frames`]). A sampled dump's values are the
//!   estimates `top` gives (each sampled block counts `1/p(size)` times),
//!   and a comment says so.
//! - One location per return address; the inlined frames at that address
//!   are its lines, innermost first, as profile.proto orders them.
//!   Functions carry their file; lines their line numbers.
//! - One mapping per module of the dump, with its address range, path and
//!   build-id (hex), and `has_functions` set so pprof does not try to
//!   symbolize again.
//!
//! The messages are declared here by hand (only the fields heapdump
//! writes, with profile.proto's field numbers) and encoded by prost.

use std::collections::HashMap;
use std::io::Write;

use anyhow::{Context as _, Result};
use flate2::Compression;
use flate2::write::GzEncoder;
use prost::Message as _;

use super::HeapModel;
use crate::sampling::StackSampling;
use crate::symbolize::hex;

/// profile.proto's messages, as far as heapdump fills them.
mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub mapping: Vec<Mapping>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        #[prost(int64, tag = "12")]
        pub period: i64,
        #[prost(int64, repeated, tag = "13")]
        pub comment: Vec<i64>,
        #[prost(int64, tag = "14")]
        pub default_sample_type: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Mapping {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub memory_start: u64,
        #[prost(uint64, tag = "3")]
        pub memory_limit: u64,
        #[prost(uint64, tag = "4")]
        pub file_offset: u64,
        #[prost(int64, tag = "5")]
        pub filename: i64,
        #[prost(int64, tag = "6")]
        pub build_id: i64,
        #[prost(bool, tag = "7")]
        pub has_functions: bool,
        #[prost(bool, tag = "8")]
        pub has_filenames: bool,
        #[prost(bool, tag = "9")]
        pub has_line_numbers: bool,
        #[prost(bool, tag = "10")]
        pub has_inline_frames: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub mapping_id: u64,
        #[prost(uint64, tag = "3")]
        pub address: u64,
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        #[prost(int64, tag = "2")]
        pub line: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        #[prost(int64, tag = "4")]
        pub filename: i64,
    }
}

/// Options of the pprof export.
#[derive(Clone, Debug, Default)]
pub struct PprofOptions {
    /// The dump's name, for the profile's comment.
    pub dump_name: String,
}

/// What was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PprofSummary {
    /// Samples (distinct stacks as pprof sees them).
    pub samples: usize,
    /// Locations (return addresses).
    pub locations: usize,
    /// Functions.
    pub functions: usize,
    /// Mappings (modules).
    pub mappings: usize,
    /// Sum of `inuse_space` (estimated in a sampled dump).
    pub bytes: u64,
    /// Sum of `inuse_objects` (estimated in a sampled dump).
    pub objects: u64,
    /// The values are estimates from a stack sample.
    pub estimated: bool,
}

impl super::Export for PprofOptions {
    type Summary = PprofSummary;

    fn name(&self) -> &'static str {
        "pprof profile"
    }

    fn file_name(&self) -> &'static str {
        "FILE.pb.gz"
    }

    fn kind(&self) -> super::OutputKind {
        super::OutputKind::Binary
    }

    fn needs_graph(&self) -> bool {
        false
    }

    fn write(&self, model: &HeapModel<'_>, out: &mut super::Output) -> Result<PprofSummary> {
        write_pprof(model, self, out)
    }
}

/// profile.proto's string table: index 0 is the empty string.
#[derive(Default)]
struct Strings {
    table: Vec<String>,
    ids: HashMap<String, i64>,
}

impl Strings {
    fn id(&mut self, s: &str) -> i64 {
        if self.table.is_empty() {
            self.table.push(String::new());
            self.ids.insert(String::new(), 0);
        }
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.table.len() as i64;
        self.table.push(s.to_owned());
        self.ids.insert(s.to_owned(), id);
        id
    }
}

/// Writes `model` as a gzipped pprof profile to `out`.
pub fn write_pprof(
    model: &HeapModel<'_>,
    options: &PprofOptions,
    out: &mut dyn Write,
) -> Result<PprofSummary> {
    let (profile, summary) = profile(model, options);
    let mut gz = GzEncoder::new(out, Compression::default());
    gz.write_all(&profile.encode_to_vec())
        .context("cannot write the profile")?;
    gz.finish().context("cannot write the profile")?;
    Ok(summary)
}

fn profile(model: &HeapModel<'_>, options: &PprofOptions) -> (proto::Profile, PprofSummary) {
    let view = model.view();
    let mut strings = Strings::default();
    strings.id("");
    let sample_type = vec![
        proto::ValueType {
            r#type: strings.id("inuse_objects"),
            unit: strings.id("count"),
        },
        proto::ValueType {
            r#type: strings.id("inuse_space"),
            unit: strings.id("bytes"),
        },
    ];

    // Mappings: one per module, ids from 1 in the dump's order.
    let mut mappings: Vec<proto::Mapping> = Vec::new();
    let mut ranges: Vec<(u64, u64, u64)> = Vec::new(); // start, end, mapping id
    for (i, m) in view.modules().iter().enumerate() {
        let id = i as u64 + 1;
        let path = view.string_lossy(m.path).unwrap_or_default();
        let build_id = view.string(m.build_id).map(hex).unwrap_or_default();
        mappings.push(proto::Mapping {
            id,
            memory_start: m.start,
            memory_limit: m.end,
            // The file offset of `start`, for a module whose first
            // segment maps the file from offset 0 (as linkers lay them out).
            file_offset: m.start.wrapping_sub(m.load_bias),
            filename: strings.id(&path),
            build_id: strings.id(&build_id),
            ..Default::default()
        });
        ranges.push((m.start, m.end, id));
    }
    let mapping_of = |pc: u64| {
        ranges
            .iter()
            .find(|&&(start, end, _)| start <= pc && pc < end)
            .map_or(0, |r| r.2)
    };

    // Figures by stack, weighted as `top` weighs them.
    let sampling = StackSampling::of(view);
    let mut stacks: Vec<(u32, (f64, f64))> = sampling
        .live_by_stack(view.allocations().iter())
        .stacks
        .into_iter()
        .map(|(stack, figures)| (stack, (figures.blocks, figures.bytes)))
        .collect();
    stacks.sort_unstable_by_key(|&(stack, _)| stack);

    let mut functions: Vec<proto::Function> = Vec::new();
    let mut function_ids: HashMap<(String, String), u64> = HashMap::new();
    let mut locations: Vec<proto::Location> = Vec::new();
    let mut location_ids: HashMap<Vec<u32>, u64> = HashMap::new();
    let mut samples: HashMap<Vec<u64>, (f64, f64)> = HashMap::new();
    let frames = model.frames();
    for (stack, (objects, bytes)) in stacks {
        let ids = model.profile_frames(stack);
        let mut location_list = Vec::new();
        // A location is the frames of one return address: inlined ones,
        // then the one they were inlined into.
        let mut run: Vec<u32> = Vec::new();
        for (k, &id) in ids.iter().enumerate() {
            run.push(id);
            let frame = &frames[id as usize];
            let next_same_pc = ids
                .get(k + 1)
                .is_some_and(|&n| frames[n as usize].pc == frame.pc);
            if frame.inlined && next_same_pc {
                continue;
            }
            let run = std::mem::take(&mut run);
            let next = locations.len() as u64 + 1;
            let location = *location_ids.entry(run.clone()).or_insert_with(|| {
                let line = run
                    .iter()
                    .map(|&f| {
                        let frame = &frames[f as usize];
                        let name = frame.name();
                        let file = frame.file.clone().unwrap_or_default();
                        let next = functions.len() as u64 + 1;
                        let function_id = *function_ids
                            .entry((name.clone(), file.clone()))
                            .or_insert_with(|| {
                                functions.push(proto::Function {
                                    id: next,
                                    name: strings.id(&name),
                                    system_name: strings.id(&name),
                                    filename: strings.id(&file),
                                });
                                next
                            });
                        proto::Line {
                            function_id,
                            line: frame.line.map_or(0, i64::from),
                        }
                    })
                    .collect();
                locations.push(proto::Location {
                    id: next,
                    mapping_id: mapping_of(frame.pc),
                    address: frame.pc,
                    line,
                });
                next
            });
            location_list.push(location);
        }
        if location_list.is_empty() {
            // No frames (no stack recorded, or it could not be read): one
            // location so the bytes still show, under a name that says so.
            let next = locations.len() as u64 + 1;
            let location = *location_ids.entry(Vec::new()).or_insert_with(|| {
                let function = functions.len() as u64 + 1;
                functions.push(proto::Function {
                    id: function,
                    name: strings.id("[no stack]"),
                    system_name: strings.id("[no stack]"),
                    filename: 0,
                });
                locations.push(proto::Location {
                    id: next,
                    line: vec![proto::Line {
                        function_id: function,
                        line: 0,
                    }],
                    ..Default::default()
                });
                next
            });
            location_list.push(location);
        }
        let e = samples.entry(location_list).or_default();
        e.0 += objects;
        e.1 += bytes;
    }

    // What each mapping's locations carry.
    for location in &locations {
        let Some(mapping) = mappings
            .iter_mut()
            .find(|m| m.id == location.mapping_id && location.mapping_id != 0)
        else {
            continue;
        };
        mapping.has_functions = true;
        mapping.has_inline_frames |= location.line.len() > 1;
        for line in &location.line {
            let function = &functions[line.function_id as usize - 1];
            mapping.has_filenames |= function.filename != 0;
            mapping.has_line_numbers |= line.line != 0;
        }
    }

    let mut sample: Vec<proto::Sample> = samples
        .into_iter()
        .map(|(location_id, (objects, bytes))| proto::Sample {
            location_id,
            value: vec![objects.round() as i64, bytes.round() as i64],
        })
        .collect();
    sample.sort_unstable_by(|a, b| {
        b.value[1]
            .cmp(&a.value[1])
            .then(a.location_id.cmp(&b.location_id))
    });

    let mut comment = vec![strings.id(&format!(
        "heapdump {}: live memory of {}",
        env!("CARGO_PKG_VERSION"),
        options.dump_name
    ))];
    if sampling.is_sampled() {
        comment.push(strings.id(&sampling.note()));
    }
    let summary = PprofSummary {
        samples: sample.len(),
        locations: locations.len(),
        functions: functions.len(),
        mappings: mappings.len(),
        bytes: sample.iter().map(|s| s.value[1] as u64).sum(),
        objects: sample.iter().map(|s| s.value[0] as u64).sum(),
        estimated: sampling.is_sampled(),
    };
    let default_sample_type = strings.id("inuse_space");
    let period_type = Some(proto::ValueType {
        r#type: strings.id("space"),
        unit: strings.id("bytes"),
    });
    let profile = proto::Profile {
        sample_type,
        sample,
        mapping: mappings,
        location: locations,
        function: functions,
        string_table: strings.table,
        time_nanos: view.process().timestamp_ns as i64,
        period_type,
        period: sampling.interval as i64,
        comment,
        default_sample_type,
    };
    (profile, summary)
}
