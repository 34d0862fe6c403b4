//! Files dad-trace reads and writes on behalf of a user who may not be the one running it
//! (leaf). Reads: regular files only, of a bounded size, opened without blocking (a FIFO
//! must not hang a root process). Writes: atomic, synced, readable by others.
use std::{
    fs::File,
    io::{BufWriter, Write as _},
    os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
};

/// Why a file was not opened for reading.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("not a regular file ({0})")]
    NotAFile(&'static str),
    #[error("{size} bytes, more than the {limit} allowed")]
    TooLarge { size: u64, limit: u64 },
}

/// Opens `path` for reading if it is a regular file of at most `limit` bytes; returns it with
/// its size.
pub fn open_regular(path: &Path, limit: u64) -> Result<(File, u64), OpenError> {
    // Non-blocking: opening a FIFO must not wait for a writer; the type is checked next.
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(OpenError::NotAFile(kind(meta.file_type())));
    }
    if meta.len() > limit {
        return Err(OpenError::TooLarge {
            size: meta.len(),
            limit,
        });
    }
    Ok((file, meta.len()))
}

fn kind(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// Writes `path` atomically: a temporary file beside it, filled, synced, then renamed over
/// it, created with mode 0644 less the umask. A reader sees the old file or the new one.
/// `fill` writes through a buffer: serializers write token by token.
pub fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<&mut File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut temporary = tempfile::Builder::new()
        .prefix(".dad-trace-")
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)?;
    let mut buffered = BufWriter::with_capacity(64 << 10, temporary.as_file_mut());
    fill(&mut buffered)?;
    buffered.flush()?;
    drop(buffered);
    temporary.as_file().sync_all()?;
    temporary.persist(path).map_err(|e| e.error)?;
    Ok(())
}
