//! What the agent knows of its host: the machine id, and how to give back the memory of code
//! it no longer runs.

/// Lets the kernel drop this process's mappings of the executable's code and map back only
/// the pages it runs. The `ingot` binary carries the master, the historian and every built-in;
/// an agent idles in a small part of it, but start-up and fault-around (16 pages mapped per
/// fault) leave megabytes of unrelated code resident. Only read-and-execute mappings of the
/// executable itself are touched: they are never written, so nothing is lost (the pages stay
/// in the page cache and fault back in as needed). Best effort; Linux only.
pub(super) fn trim_resident_code() {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        let path = f.nth(3).unwrap_or_default();
        if perms != "r-xp" || std::path::Path::new(path) != exe {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        // SAFETY: the range is an r-xp mapping of our executable (read from /proc/self/maps):
        // MADV_DONTNEED on a never-written private file mapping only unmaps pages that fault
        // back in unchanged. MADV_RANDOM is a hint: kernels that honour it for fault-around
        // map one page per fault; 6.18 does not (measured: one byte touched per MiB of a
        // cached file maps 64 KiB per touch with or without it).
        unsafe {
            let addr = start as *mut libc::c_void;
            libc::madvise(addr, end - start, libc::MADV_RANDOM);
            libc::madvise(addr, end - start, libc::MADV_DONTNEED);
        }
    }
}

/// `/etc/machine-id`, else `/var/lib/dbus/machine-id`, else the host name.
pub fn machine_id() -> String {
    for p in ["/etc/machine-id", "/var/lib/dbus/machine-id"] {
        if let Ok(s) = std::fs::read_to_string(p) {
            let s = s.trim();
            if !s.is_empty() {
                return s.to_owned();
            }
        }
    }
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}
