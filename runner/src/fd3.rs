//! The runner's own fd 3.

use std::os::fd::{FromRawFd, OwnedFd};

/// If this process was started with fd 3 open, marks it close-on-exec and returns it as the
/// upstream channel3 sink. Call it first thing in `main`, before any other file is opened.
///
/// Without this, every child would inherit fd 3 and could write straight to the parent's channel,
/// bypassing the relabelling that gives its messages their process path. Children get a fd 3
/// only when the runner maps one explicitly.
pub fn claim_inherited_fd3() -> Option<OwnedFd> {
    // SAFETY: fcntl on a possibly-closed descriptor just fails with EBADF.
    let flags = unsafe { libc::fcntl(3, libc::F_GETFD) };
    if flags < 0 {
        return None;
    }
    // SAFETY: as above; setting FD_CLOEXEC does not change what the descriptor refers to.
    unsafe { libc::fcntl(3, libc::F_SETFD, flags | libc::FD_CLOEXEC) };
    // SAFETY: fd 3 is open and from now on owned only by the returned value.
    Some(unsafe { OwnedFd::from_raw_fd(3) })
}
