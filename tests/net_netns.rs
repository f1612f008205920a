//! The master in the host's network namespace, three minions each in their own namespace,
//! joined by veth pairs (needs root and `ip`; skipped otherwise), including a link going down
//! and up again mid-run.

use std::process::Command;
use std::time::Duration;

use crate::net_support::{report, wait_for, Fleet};

struct Namespaces {
    names: Vec<String>,
    host_ends: Vec<String>,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for v in &self.host_ends {
            let _ = Command::new("ip").args(["link", "del", v]).output();
        }
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Namespace i gets 10.B.i.2/30, the host end 10.B.i.1/30.
fn make(count: usize) -> Result<(Namespaces, u8), String> {
    let pid = std::process::id();
    let b = (pid % 200 + 20) as u8;
    let mut ns = Namespaces {
        names: Vec::new(),
        host_ends: Vec::new(),
    };
    for i in 0..count {
        let name = format!("ingot-t{pid}-{i}");
        let host = format!("ig{}h{i}", pid % 100000);
        let inner = format!("ig{}n{i}", pid % 100000);
        ip(&["netns", "add", &name])?;
        ns.names.push(name.clone());
        ip(&["link", "add", &host, "type", "veth", "peer", "name", &inner])?;
        ns.host_ends.push(host.clone());
        ip(&["link", "set", &inner, "netns", &name])?;
        ip(&["addr", "add", &format!("10.{b}.{i}.1/30"), "dev", &host])?;
        ip(&["link", "set", &host, "up"])?;
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("10.{b}.{i}.2/30"),
            "dev",
            &inner,
        ])?;
        ip(&["-n", &name, "link", "set", &inner, "up"])?;
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
    }
    Ok((ns, b))
}

#[test]
fn three_minions_in_their_own_namespaces_and_a_link_going_down_and_up() {
    if !crate::util::running_as_root() {
        eprintln!("SKIPPED: network namespace test needs root (CI runs as root)");
        return;
    }
    let (ns, b) = match make(3) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("SKIPPED: cannot create network namespaces: {e}");
            return;
        }
    };
    let mut fleet = Fleet::start_on("0.0.0.0", 20);
    let names = ["ns0", "ns1", "ns2"];
    let started = fleet.path().join("ns2-started");
    for (i, n) in names.iter().enumerate() {
        let body = if i == 2 {
            format!(
                "touch {}; sleep 3; echo 'after the link came back' >&2",
                started.display()
            )
        } else {
            String::new()
        };
        fleet.minion_tree(n, &body);
        let addr = format!("10.{b}.{i}.1:{}", fleet.port);
        fleet.start_minion_in(Some(&ns.names[i]), n, n, Some(addr));
    }
    fleet.wait_connected(&names);
    for n in fleet.nodes() {
        let addr = n["address"].as_str().unwrap_or_default().to_owned();
        assert!(addr.starts_with(&format!("10.{b}.")), "{n}");
    }

    // Take ns2's link down while its facts run, then up again.
    let d = fleet.path().to_owned();
    let run = std::thread::spawn(move || {
        let out = crate::net_support::master_run(&d, &["ns*"])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    });
    assert!(wait_for(Duration::from_secs(20), || started.exists().then_some(())).is_some());
    ip(&["link", "set", &ns.host_ends[2], "down"]).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    ip(&["link", "set", &ns.host_ends[2], "up"]).unwrap();
    let (code, stdout) = run.join().unwrap();
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("a JSON document");
    assert_eq!(
        code,
        Some(0),
        "{doc:#}\nns2 log:\n{}",
        fleet.minion_log("ns2")
    );
    for n in names {
        assert_eq!(report(&doc, n)["status"], "changed", "{doc:#}");
        assert_eq!(
            fleet.motd(n).as_deref(),
            Some(format!("hello {n}\n").as_str())
        );
    }
    assert!(
        fleet.minion_log("ns2").contains("disconnected"),
        "the link outage was not noticed: {}",
        fleet.minion_log("ns2")
    );
    drop(fleet);
    drop(ns);
}
