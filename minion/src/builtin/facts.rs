//! The built-in facts: `os`, `hostname`, `network`, `hardware`, `users`.
//!
//! Each reads /etc, /proc and /sys directly (no subprocesses, no DNS), so all of them together
//! take a few milliseconds. Run as an executable (`facts/os`), a fact prints its JSON document
//! on stdout and exits 0, or explains on stderr and exits 1.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::path::Path;

use serde_json::{json, Map, Value};

/// A built-in fact gatherer.
pub type Gather = fn() -> Result<Value, FactError>;

/// Why a built-in fact could not be gathered.
#[derive(Debug, thiserror::Error)]
pub enum FactError {
    /// A file the fact needs could not be read.
    #[error("cannot read {path}: {source} (is /proc mounted and /etc readable?)")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A system call failed.
    #[error("{what} failed: {source}")]
    Sys {
        /// What was attempted.
        what: &'static str,
        /// The error.
        #[source]
        source: nix::Error,
    },
}

/// Every built-in fact, by name.
pub const FACTS: &[(&str, Gather)] = &[
    ("os", os),
    ("hostname", hostname),
    ("network", network),
    ("hardware", hardware),
    ("users", users),
];

/// The built-in fact of this name.
pub fn fact(name: &str) -> Option<Gather> {
    FACTS.iter().find(|(n, _)| *n == name).map(|(_, g)| *g)
}

/// Entry point of a built-in fact executable.
pub fn main(name: &str, args: &[OsString]) -> i32 {
    let Some(gather) = fact(name) else {
        eprintln!("ingot: there is no built-in fact {name:?}");
        return 2;
    };
    if let Some(a) = args.first() {
        if a == "-h" || a == "--help" {
            println!("usage: {name}\n\nPrints the {name} fact as JSON on stdout (a built-in ingot fact; takes no input).");
            return 0;
        }
        eprintln!("{name}: unexpected argument {a:?}; a fact takes no arguments");
        return 2;
    }
    match gather() {
        Ok(v) => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{v}");
            0
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            1
        }
    }
}

fn read(path: &str) -> Result<String, FactError> {
    fs::read_to_string(path).map_err(|source| FactError::Read {
        path: path.into(),
        source,
    })
}

fn read_opt(path: impl AsRef<Path>) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// Parses os-release `KEY=value` lines (values optionally quoted).
fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.starts_with('#') {
                return None;
            }
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_ascii_lowercase(), v.replace("\\\"", "\"")))
        })
        .collect()
}

/// `os`: distribution (os-release), kernel and architecture.
pub fn os() -> Result<Value, FactError> {
    let rel = read("/etc/os-release")
        .or_else(|_| read("/usr/lib/os-release"))
        .map(|t| parse_os_release(&t))
        .unwrap_or_default();
    let id = rel.get("id").cloned().unwrap_or_else(|| "linux".into());
    let like: Vec<String> = rel
        .get("id_like")
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let family = family(&id, &like);
    let u = nix::sys::utsname::uname().map_err(|source| FactError::Sys {
        what: "uname",
        source,
    })?;
    let s = |o: &std::ffi::OsStr| o.to_string_lossy().into_owned();
    Ok(json!({
        "id": id,
        "id_like": like,
        "family": family,
        "name": rel.get("name"),
        "pretty_name": rel.get("pretty_name"),
        "version": rel.get("version"),
        "version_id": rel.get("version_id"),
        "version_codename": rel.get("version_codename"),
        "kernel": {"name": s(u.sysname()), "release": s(u.release()), "version": s(u.version())},
        "arch": s(u.machine()),
    }))
}

fn family(id: &str, like: &[String]) -> String {
    let all: Vec<&str> = std::iter::once(id)
        .chain(like.iter().map(String::as_str))
        .collect();
    let has = |x: &[&str]| all.iter().any(|a| x.contains(a));
    if has(&["debian", "ubuntu"]) {
        "debian".into()
    } else if has(&["rhel", "fedora", "centos", "rocky", "almalinux"]) {
        "redhat".into()
    } else if has(&["suse", "opensuse", "sles"]) {
        "suse".into()
    } else if has(&["arch"]) {
        "arch".into()
    } else if has(&["alpine"]) {
        "alpine".into()
    } else {
        like.first().cloned().unwrap_or_else(|| id.to_owned())
    }
}

/// `hostname`: host name, fully qualified name (from /etc/hosts or the kernel's domain name,
/// never DNS) and machine id.
pub fn hostname() -> Result<Value, FactError> {
    let host = nix::unistd::gethostname()
        .map_err(|source| FactError::Sys {
            what: "gethostname",
            source,
        })?
        .to_string_lossy()
        .into_owned();
    let short = host.split('.').next().unwrap_or(&host).to_owned();
    let fqdn = if host.contains('.') {
        host.clone()
    } else {
        fqdn_from_hosts(&read_opt("/etc/hosts").unwrap_or_default(), &host)
            .or_else(|| {
                read_opt("/proc/sys/kernel/domainname")
                    .filter(|d| !d.is_empty() && d != "(none)")
                    .map(|d| format!("{host}.{d}"))
            })
            .unwrap_or_else(|| host.clone())
    };
    let domain = fqdn.split_once('.').map(|(_, d)| d.to_owned());
    let machine_id = read_opt("/etc/machine-id")
        .filter(|s| !s.is_empty())
        .or_else(|| read_opt("/var/lib/dbus/machine-id").filter(|s| !s.is_empty()));
    Ok(json!({
        "hostname": host,
        "short": short,
        "fqdn": fqdn,
        "domain": domain,
        "machine_id": machine_id,
    }))
}

fn fqdn_from_hosts(hosts: &str, host: &str) -> Option<String> {
    hosts.lines().find_map(|l| {
        let l = l.split('#').next().unwrap_or("");
        let names: Vec<&str> = l.split_whitespace().skip(1).collect();
        if names.contains(&host) {
            names
                .iter()
                .find(|n| n.starts_with(&format!("{host}.")))
                .map(|n| (*n).to_owned())
        } else {
            None
        }
    })
}

/// `network`: interfaces (MAC, MTU, state, addresses) and default routes.
pub fn network() -> Result<Value, FactError> {
    let mut ifaces: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    if let Ok(dir) = fs::read_dir("/sys/class/net") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let p = e.path();
            let mut m = Map::new();
            m.insert("mac".into(), json!(read_opt(p.join("address"))));
            m.insert(
                "mtu".into(),
                json!(read_opt(p.join("mtu")).and_then(|s| s.parse::<u64>().ok())),
            );
            m.insert("state".into(), json!(read_opt(p.join("operstate"))));
            m.insert("ipv4".into(), json!([]));
            m.insert("ipv6".into(), json!([]));
            ifaces.insert(name, m);
        }
    }
    let addrs = nix::ifaddrs::getifaddrs().map_err(|source| FactError::Sys {
        what: "getifaddrs",
        source,
    })?;
    for a in addrs {
        let Some(addr) = a.address else { continue };
        let prefix = |mask: Option<&nix::sys::socket::SockaddrStorage>, v6: bool| -> Option<u32> {
            let m = mask?;
            if v6 {
                Some(
                    m.as_sockaddr_in6()?
                        .ip()
                        .octets()
                        .iter()
                        .map(|b| b.count_ones())
                        .sum(),
                )
            } else {
                Some(u32::from(m.as_sockaddr_in()?.ip()).count_ones())
            }
        };
        let (key, entry) = if let Some(v4) = addr.as_sockaddr_in() {
            (
                "ipv4",
                json!({"address": v4.ip().to_string(), "prefix": prefix(a.netmask.as_ref(), false)}),
            )
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            (
                "ipv6",
                json!({"address": v6.ip().to_string(), "prefix": prefix(a.netmask.as_ref(), true)}),
            )
        } else {
            continue;
        };
        let m = ifaces.entry(a.interface_name.clone()).or_insert_with(|| {
            let mut m = Map::new();
            m.insert("ipv4".into(), json!([]));
            m.insert("ipv6".into(), json!([]));
            m
        });
        if let Some(Value::Array(list)) = m.get_mut(key) {
            list.push(entry);
        }
    }
    let v4 = read_opt("/proc/net/route")
        .map(|t| default_route_v4(&t))
        .unwrap_or_default();
    let v6 = read_opt("/proc/net/ipv6_route")
        .map(|t| default_route_v6(&t))
        .unwrap_or_default();
    Ok(json!({
        "interfaces": ifaces,
        "default_route": {"ipv4": v4, "ipv6": v6},
    }))
}

/// The first default route in /proc/net/route: `{"interface", "gateway"}`.
fn default_route_v4(text: &str) -> Option<Value> {
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 8 || f[1] != "00000000" || f[7] != "00000000" {
            return None;
        }
        let gw = u32::from_str_radix(f[2], 16).ok()?;
        // The kernel prints the address in host byte order (little-endian here).
        let ip = std::net::Ipv4Addr::from(gw.to_le_bytes());
        Some(json!({"interface": f[0], "gateway": ip.to_string()}))
    })
}

fn default_route_v6(text: &str) -> Option<Value> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 10 || f[0] != "00000000000000000000000000000000" || f[1] != "00" {
            return None;
        }
        if f[9] == "lo" {
            return None;
        }
        let bytes: Vec<u8> = (0..16)
            .map(|i| u8::from_str_radix(f[4].get(i * 2..i * 2 + 2)?, 16).ok())
            .collect::<Option<_>>()?;
        let arr: [u8; 16] = bytes.try_into().ok()?;
        Some(json!({"interface": f[9], "gateway": std::net::Ipv6Addr::from(arr).to_string()}))
    })
}

const PSEUDO_FS: &[&str] = &[
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "devpts",
    "mqueue",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "autofs",
    "configfs",
    "fusectl",
    "hugetlbfs",
    "binfmt_misc",
    "rpc_pipefs",
    "nsfs",
    "efivarfs",
    "selinuxfs",
];
const NETWORK_FS: &[&str] = &["nfs", "nfs4", "cifs", "smb3", "fuse.sshfs", "9p", "ceph"];

/// `hardware`: CPUs, memory, mounts and block devices.
pub fn hardware() -> Result<Value, FactError> {
    let cpuinfo = read("/proc/cpuinfo")?;
    let count = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let model = cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        matches!(k.trim(), "model name" | "Model" | "cpu model").then(|| v.trim().to_owned())
    });
    let meminfo = read("/proc/meminfo")?;
    let mem = |key: &str| -> Option<u64> {
        meminfo.lines().find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
            Some(kb * 1024)
        })
    };
    let mut mounts = Vec::new();
    for l in read("/proc/self/mounts")?.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 4 || PSEUDO_FS.contains(&f[2]) {
            continue;
        }
        let target = unescape_mount(f[1]);
        let mut m = json!({"device": unescape_mount(f[0]), "mountpoint": target, "fstype": f[2],
                           "options": f[3].split(',').collect::<Vec<_>>()});
        // statvfs on a network filesystem can hang when the server is away: skip sizes there.
        if !NETWORK_FS.contains(&f[2]) {
            if let Ok(s) = nix::sys::statvfs::statvfs(target.as_str()) {
                // The field types are u32 on some 32-bit targets.
                #[allow(clippy::unnecessary_cast)]
                let frag = s.fragment_size() as u64;
                #[allow(clippy::unnecessary_cast)]
                let (size, avail, free) = (
                    s.blocks() as u64 * frag,
                    s.blocks_available() as u64 * frag,
                    s.blocks_free() as u64 * frag,
                );
                m["size"] = json!(size);
                m["available"] = json!(avail);
                m["free"] = json!(free);
            }
        }
        mounts.push(m);
    }
    let mut disks = BTreeMap::new();
    if let Ok(dir) = fs::read_dir("/sys/block") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("loop") || name.starts_with("ram") {
                continue;
            }
            let p = e.path();
            let sectors: Option<u64> = read_opt(p.join("size")).and_then(|s| s.parse().ok());
            disks.insert(
                name,
                json!({
                    "size": sectors.map(|s| s * 512),
                    "rotational": read_opt(p.join("queue/rotational")).map(|s| s == "1"),
                    "removable": read_opt(p.join("removable")).map(|s| s == "1"),
                    "model": read_opt(p.join("device/model")),
                }),
            );
        }
    }
    Ok(json!({
        "cpus": {"count": count.max(1), "model": model},
        "memory": {"total": mem("MemTotal"), "available": mem("MemAvailable"),
                   "swap_total": mem("SwapTotal"), "swap_free": mem("SwapFree")},
        "mounts": mounts,
        "disks": disks,
    }))
}

/// /proc/mounts escapes spaces and friends as `\040` octal.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `users`: local users (/etc/passwd) and groups (/etc/group), keyed by name.
pub fn users() -> Result<Value, FactError> {
    Ok(users_from(&read("/etc/passwd")?, &read("/etc/group")?))
}

/// The `users` fact from the text of a passwd and a group file.
pub fn users_from(passwd: &str, group: &str) -> Value {
    let mut users = Map::new();
    for l in passwd.lines() {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 || l.starts_with('#') {
            continue;
        }
        users.insert(
            f[0].into(),
            json!({"uid": f[2].parse::<u32>().ok(), "gid": f[3].parse::<u32>().ok(),
                   "comment": f[4], "home": f[5], "shell": f[6]}),
        );
    }
    let mut groups = Map::new();
    for l in group.lines() {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 || l.starts_with('#') {
            continue;
        }
        let members: Vec<&str> = f[3].split(',').filter(|m| !m.is_empty()).collect();
        groups.insert(
            f[0].into(),
            json!({"gid": f[2].parse::<u32>().ok(), "members": members}),
        );
    }
    json!({"users": users, "groups": groups})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_parsing_and_family() {
        let r =
            parse_os_release("ID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"24.04\"\n# c\nNAME='U'\n");
        assert_eq!(r["id"], "ubuntu");
        assert_eq!(r["version_id"], "24.04");
        assert_eq!(r["name"], "U");
        assert_eq!(family("ubuntu", &["debian".into()]), "debian");
        assert_eq!(family("rocky", &["rhel".into(), "centos".into()]), "redhat");
        assert_eq!(family("plan9", &[]), "plan9");
    }

    #[test]
    fn routes() {
        let v4 =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(
            default_route_v4(v4).unwrap(),
            json!({"interface": "eth0", "gateway": "192.168.0.1"})
        );
        assert!(default_route_v4("Iface\n").is_none());
    }

    #[test]
    fn hosts_fqdn_and_mount_escapes() {
        let hosts = "127.0.0.1 localhost\n10.0.0.5 web1.example.com web1 # me\n";
        assert_eq!(
            fqdn_from_hosts(hosts, "web1").as_deref(),
            Some("web1.example.com")
        );
        assert_eq!(fqdn_from_hosts(hosts, "db"), None);
        assert_eq!(unescape_mount("/mnt/a\\040b"), "/mnt/a b");
    }

    #[test]
    fn users_and_groups() {
        let v = users_from(
            "root:x:0:0:root:/root:/bin/bash\nbob:x:1000:1000:Bob,,,:/home/bob:/bin/sh\n",
            "root:x:0:\nadm:x:4:bob,alice\n",
        );
        assert_eq!(v["users"]["bob"]["uid"], 1000);
        assert_eq!(v["users"]["bob"]["home"], "/home/bob");
        assert_eq!(v["groups"]["adm"]["members"], json!(["bob", "alice"]));
    }

    #[test]
    fn every_builtin_fact_works_here_quickly() {
        let start = std::time::Instant::now();
        for (name, g) in FACTS {
            let v = g().unwrap_or_else(|e| panic!("fact {name}: {e}"));
            assert!(v.is_object(), "{name}");
        }
        eprintln!("all built-in facts in-process: {:?}", start.elapsed());
        // The budget is 20 ms for all together; debug builds and loaded machines get slack.
        assert!(
            start.elapsed() < std::time::Duration::from_millis(200),
            "{:?}",
            start.elapsed()
        );
    }
}
