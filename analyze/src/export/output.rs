//! Where an export goes: a file, replaced only once the export is complete,
//! or stdout. Every export goes through [`Output`], so the rules (no binary
//! on a terminal, no half-written file under the requested name, errors
//! naming the file) are written once.

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
        if *self == Destination::Stdout {
            let (name, file) = (export.name(), export.file_name());
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
            Destination::File(path) => path.display().to_string(),
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
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output").field("file", &self.file).finish()
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
                })
            }
            Destination::File(target) => {
                let temporary = temporary_path(target);
                let _ = std::fs::remove_file(&temporary);
                let file = File::create(&temporary)
                    .with_context(|| format!("cannot create {}", target.display()))?;
                Ok(Output {
                    sink: Some(Sink::File(BufWriter::with_capacity(BUFFER, file))),
                    file: Some((temporary, target.clone())),
                })
            }
        }
    }

    /// The file to write for an export that cannot stream (the temporary
    /// file, renamed into place by [`finish`](Self::finish)); `None` for stdout.
    pub fn file_path(&self) -> Option<&Path> {
        self.file.as_ref().map(|(temporary, _)| temporary.as_path())
    }

    /// Adds the destination to an export's error, and removes the
    /// temporary file.
    pub fn fail(&mut self, error: anyhow::Error) -> anyhow::Error {
        self.discard();
        match &self.file {
            Some((_, target)) => error.context(format!("cannot write {}", target.display())),
            None => error,
        }
    }

    /// Flushes, and moves a file into place.
    pub fn finish(mut self) -> anyhow::Result<()> {
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
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if self.file.is_some() {
            self.discard();
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.sink {
            Some(Sink::Stdout(out)) => out.write(buf),
            Some(Sink::File(out)) => out.write(buf),
            None => Err(std::io::Error::other("the output was closed")),
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
