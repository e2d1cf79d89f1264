//! Where an export goes: a file, replaced only once the export is complete,
//! stdout, or partitions of a dataset directory, moved into place only once
//! all are complete. Every export goes through [`Output`], so the rules (no
//! binary on a terminal, no half-written file under the requested name, no
//! partition replaced unless asked, errors naming the file) are written once.

use std::fs::File;
use std::io::{BufWriter, IsTerminal as _, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::Export;

/// Where to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// Standard output.
    Stdout,
    /// A file, replaced if it exists.
    File(PathBuf),
    /// A directory of partitions (a dataset), created if missing. Other
    /// partitions in it are left alone; one this export writes is replaced
    /// only if `replace` is set, else the export fails.
    Directory {
        /// The dataset's directory.
        path: PathBuf,
        /// Whether existing partitions of the export may be replaced.
        replace: bool,
    },
}

impl Destination {
    /// The destination of an `-o` option: none or `-` is stdout.
    pub fn from_option(path: Option<&Path>) -> Destination {
        match path {
            Some(path) if path.as_os_str() != "-" => Destination::File(path.to_path_buf()),
            _ => Destination::Stdout,
        }
    }

    /// Whether `export` may go here: stdout is refused for a file-only
    /// format, and for a binary one when it is a terminal. Checked again
    /// by [`Output::create`]; a command checks first to fail before a long
    /// analysis.
    pub fn check<E: Export + ?Sized>(&self, export: &E) -> anyhow::Result<()> {
        let (name, file) = (export.name(), export.file_name());
        match (self, export.kind()) {
            (Destination::Directory { .. }, OutputKind::Directory) => return Ok(()),
            (Destination::Directory { path, .. }, _) => bail!(
                "the {name} is one file, not a directory of partitions; pass -o {file}, not {}",
                path.display()
            ),
            (_, OutputKind::Directory) => {
                bail!("the {name} is a directory of partitions; pass -o {file}")
            }
            _ => {}
        }
        if *self == Destination::Stdout {
            match export.kind() {
                OutputKind::FileOnly => {
                    bail!("the {name} is written to a file, not a stream; pass -o {file}")
                }
                OutputKind::Binary if std::io::stdout().is_terminal() => bail!(
                    "the {name} is binary; pass -o {file} or redirect stdout to a file or pipe"
                ),
                _ => {}
            }
        }
        Ok(())
    }

    /// `stdout` or the file's path, for messages.
    pub fn describe(&self) -> String {
        match self {
            Destination::Stdout => "stdout".to_owned(),
            Destination::File(path) | Destination::Directory { path, .. } => {
                path.display().to_string()
            }
        }
    }
}

/// What an export writes, which decides where it may go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputKind {
    /// Text: a terminal is fine.
    Text,
    /// Bytes a terminal should not get; a pipe or a file is fine.
    Binary,
    /// A file written by a library that needs a path (SQLite): never stdout.
    FileOnly,
    /// Partition directories of a dataset (Parquet): never stdout, and
    /// only to a [`Destination::Directory`].
    Directory,
}

enum Sink {
    Stdout(BufWriter<std::io::Stdout>),
    File(BufWriter<File>),
}

/// An open destination. It is an `io::Write`; an export that must write a
/// file itself uses [`file_path`](Self::file_path) instead. Dropped
/// without [`finish`](Self::finish), it removes its temporary file.
pub struct Output {
    sink: Option<Sink>,
    /// The temporary file beside the target, and the target.
    file: Option<(PathBuf, PathBuf)>,
    /// For a dataset: where its partitions are written first.
    dataset: Option<Staging>,
}

/// A dataset's partitions while they are written: in a hidden directory
/// inside the dataset's (the same file system, so moving them into place
/// is a rename, and engines skip names starting with a dot).
#[derive(Debug)]
struct Staging {
    /// The hidden directory.
    staging: PathBuf,
    /// The dataset's directory.
    target: PathBuf,
    replace: bool,
    /// Partition directories written, relative to both.
    partitions: Vec<PathBuf>,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("file", &self.file)
            .field("dataset", &self.dataset)
            .finish()
    }
}

/// Big writes: exports produce hundreds of megabytes on big heaps.
const BUFFER: usize = 1 << 20;

impl Output {
    /// Opens `to` for `export`.
    pub fn create<E: Export + ?Sized>(to: &Destination, export: &E) -> anyhow::Result<Output> {
        match to {
            Destination::Stdout => {
                to.check(export)?;
                Ok(Output {
                    sink: Some(Sink::Stdout(BufWriter::with_capacity(
                        BUFFER,
                        std::io::stdout(),
                    ))),
                    file: None,
                    dataset: None,
                })
            }
            Destination::Directory { path, replace } => {
                to.check(export)?;
                std::fs::create_dir_all(path)
                    .with_context(|| format!("cannot create the directory {}", path.display()))?;
                // Unique to this run: exporters on other machines or in
                // other containers may write into the same directory with
                // the same process id. `create_dir` fails rather than reuse
                // another's.
                let unique = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |since| since.as_nanos());
                let staging = path.join(format!(
                    ".heapdump-staging-{}-{unique:x}",
                    std::process::id()
                ));
                std::fs::create_dir(&staging)
                    .with_context(|| format!("cannot create {}", staging.display()))?;
                Ok(Output {
                    sink: None,
                    file: None,
                    dataset: Some(Staging {
                        staging,
                        target: path.clone(),
                        replace: *replace,
                        partitions: Vec::new(),
                    }),
                })
            }
            Destination::File(target) => {
                to.check(export)?;
                let temporary = temporary_path(target);
                let _ = std::fs::remove_file(&temporary);
                let file = File::create(&temporary)
                    .with_context(|| format!("cannot create {}", target.display()))?;
                Ok(Output {
                    sink: Some(Sink::File(BufWriter::with_capacity(BUFFER, file))),
                    file: Some((temporary, target.clone())),
                    dataset: None,
                })
            }
        }
    }

    /// The file to write for an export that cannot stream (the temporary
    /// file, renamed into place by [`finish`](Self::finish)); `None` for stdout.
    pub fn file_path(&self) -> Option<&Path> {
        self.file.as_ref().map(|(temporary, _)| temporary.as_path())
    }

    /// For a dataset: a new directory for the partition `relative` (as
    /// `objects/dump=ID`), where the export writes its files; moved to
    /// `DIR/relative` by [`finish`](Self::finish).
    pub fn stage_directory(&mut self, relative: &Path) -> anyhow::Result<PathBuf> {
        let Some(dataset) = &mut self.dataset else {
            bail!("partitions are written to a directory (-o DIR)");
        };
        let dir = dataset.staging.join(relative);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        dataset.partitions.push(relative.to_path_buf());
        Ok(dir)
    }

    /// Adds the destination to an export's error, and removes the
    /// temporary file or partitions.
    pub fn fail(&mut self, error: anyhow::Error) -> anyhow::Error {
        self.discard();
        match (&self.file, &self.dataset) {
            (Some((_, target)), _) => error.context(format!("cannot write {}", target.display())),
            (None, Some(dataset)) => {
                error.context(format!("cannot write into {}", dataset.target.display()))
            }
            (None, None) => error,
        }
    }

    /// Flushes, and moves a file or the partitions into place.
    pub fn finish(mut self) -> anyhow::Result<()> {
        if let Some(dataset) = self.dataset.take() {
            let result = dataset.move_into_place();
            let _ = std::fs::remove_dir_all(&dataset.staging);
            return result;
        }
        let target = self.file.as_ref().map(|(_, t)| t.clone());
        let describe = || {
            target
                .as_ref()
                .map_or("stdout".into(), |t| t.display().to_string())
        };
        match self.sink.take() {
            Some(Sink::Stdout(mut out)) => out.flush()?,
            Some(Sink::File(out)) => {
                let file = out
                    .into_inner()
                    .map_err(|e| e.into_error())
                    .with_context(|| format!("cannot write {}", describe()))?;
                file.sync_all()
                    .with_context(|| format!("cannot write {}", describe()))?;
            }
            None => {}
        }
        if let Some((temporary, target)) = self.file.take()
            && let Err(error) = std::fs::rename(&temporary, &target)
        {
            let _ = std::fs::remove_file(&temporary);
            return Err(error).with_context(|| {
                format!(
                    "cannot move {} to {}",
                    temporary.display(),
                    target.display()
                )
            });
        }
        Ok(())
    }

    fn discard(&mut self) {
        self.sink = None;
        if let Some((temporary, _)) = &self.file {
            let _ = std::fs::remove_file(temporary);
        }
        if let Some(dataset) = &self.dataset {
            let _ = std::fs::remove_dir_all(&dataset.staging);
        }
    }
}

impl Staging {
    /// Moves every staged partition to its place: all or none when one is
    /// there already and may not be replaced (checked before any moves).
    fn move_into_place(&self) -> anyhow::Result<()> {
        let existing: Vec<PathBuf> = self
            .partitions
            .iter()
            .map(|p| self.target.join(p))
            .filter(|p| p.exists())
            .collect();
        if !existing.is_empty() && !self.replace {
            bail!(
                "{} exists already (this dump was exported before); pass --force to replace it",
                existing[0].display()
            );
        }
        for old in &existing {
            std::fs::remove_dir_all(old)
                .with_context(|| format!("cannot replace {}", old.display()))?;
        }
        for relative in &self.partitions {
            let (from, to) = (self.staging.join(relative), self.target.join(relative));
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            std::fs::rename(&from, &to)
                .with_context(|| format!("cannot move {} to {}", from.display(), to.display()))?;
        }
        Ok(())
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if self.file.is_some() || self.dataset.is_some() {
            self.discard();
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.sink {
            Some(Sink::Stdout(out)) => out.write(buf),
            Some(Sink::File(out)) => out.write(buf),
            None => Err(std::io::Error::other(
                "the output was closed, or is a directory",
            )),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match &mut self.sink {
            Some(Sink::Stdout(out)) => out.write_all(buf),
            Some(Sink::File(out)) => out.write_all(buf),
            None => Err(std::io::Error::other("the output was closed")),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.sink {
            Some(Sink::Stdout(out)) => out.flush(),
            Some(Sink::File(out)) => out.flush(),
            None => Ok(()),
        }
    }
}

/// `FILE.tmp-PID` beside `path`: on the same file system, so the final
/// rename is atomic.
fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}
