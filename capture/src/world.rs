//! Stopping the world: every other thread of the process is sent a signal
//! whose handler saves the interrupted registers and waits until the dump
//! is done.

use core::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use crate::DumpError;

static STOP_SIGNAL: AtomicI32 = AtomicI32::new(crate::DEFAULT_STOP_SIGNAL);
static STOP_TIMEOUT_NS: AtomicU64 = AtomicU64::new(100_000_000);

pub fn set_stop_signal(signal: i32) -> Result<(), DumpError> {
    if signal <= 0
        || signal > libc::SIGRTMAX()
        || signal == libc::SIGKILL
        || signal == libc::SIGSTOP
    {
        return Err(DumpError::InvalidSignal);
    }
    STOP_SIGNAL.store(signal, Ordering::Relaxed);
    Ok(())
}

pub fn set_stop_timeout(timeout: std::time::Duration) {
    STOP_TIMEOUT_NS.store(
        u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}
