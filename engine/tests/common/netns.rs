//! Hosts on one machine for tests of what crosses a network: every node in
//! a network namespace of its own, made by the test and removed when the
//! [`Network`] is dropped. No traffic leaves those namespaces and the veth
//! links between them and the test process.
//!
//! ```text
//!                   test process (this namespace), 10.78.K.254
//!                   │ veth s{K}r{N} ── s{K}c{N}, one per node
//!        ┌──────────┼──────────────────┐
//!   ns node 1     ns node 2          ns node 3        each node's address 10.78.K.N
//!   lo 10.78.K.1  lo 10.78.K.2       lo 10.78.K.3     sits on its loopback; /32
//!        └── s{K}m12 ─ s{K}m21 ┘          │           routes send each peer over
//!        └──────────── s{K}m13 ─ s{K}m31 ─┘           the link to it
//!                      └── s{K}m23 ─ s{K}m32 ┘
//! ```
//! A link of its own between every two nodes, and from each node to the
//! test process, so a test can cut any pair — a leader from its peers while
//! clients still reach it, or one node from one peer only (a bridge) — by
//! setting that link down. Partial faults need the `iptables` tool (its
//! nftables backend) inside the namespaces: [`Network::drop_one_way`]
//! drops what one node sends another (a one-way partition),
//! [`Network::lossy`] drops a random share of the packets on a link both
//! ways, and [`Network::slow`] caps a link's rate with `tbf`, whose queue
//! then delays what crosses it. This machine's kernel has no `netem` (so no
//! fixed added delay, reordering or duplication): a rate cap is the delay
//! there is. Every rule and queueing discipline lives in a node's namespace
//! and goes with it. Needs root, iproute2's `ip` and `tc`;
//! [`Network::unavailable`] says what is missing, for tests to skip.

use std::{
    cell::RefCell,
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    path::Path,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

/// The test process's address on every node link.
const CLIENT_HOST: u8 = 254;
/// Networks made by this process so far (each takes the next subnet).
static NETWORKS_MADE: AtomicU32 = AtomicU32::new(0);

/// Runs `ip ARGS`; panics with its error output if it fails.
fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("iproute2's ip");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `ip netns exec NS iptables ARGS`; panics with its error output if
/// it fails.
fn iptables(ns: &str, args: &[&str]) {
    let output = Command::new("ip")
        .args(["netns", "exec", ns, "iptables", "-w"])
        .args(args)
        .output()
        .expect("iproute2's ip");
    assert!(
        output.status.success(),
        "iptables {} in {ns}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `tc -n NS ARGS`; panics with its error output if it fails.
fn tc(ns: &str, args: &[&str]) {
    let output = Command::new("tc")
        .arg("-n")
        .arg(ns)
        .args(args)
        .output()
        .expect("iproute2's tc");
    assert!(
        output.status.success(),
        "tc {} in {ns}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Whether `program ARGS` runs and exits 0.
fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|output| output.status.success())
}

/// The namespaces and links of one test's nodes.
pub struct Network {
    /// Third octet of the subnet, and part of every interface name.
    subnet: u8,
    nodes: Vec<i32>,
    /// The drop probability of each lossy link end (from, to), as given to
    /// iptables (to delete the rule again).
    losses: RefCell<BTreeMap<(i32, i32), String>>,
}

impl Network {
    /// Makes a namespace per node in `nodes` (ids 1..=200), the links
    /// between every two of them and to this process, and the routes.
    pub fn create(nodes: &[i32]) -> Network {
        assert!(nodes.iter().all(|n| (1..=200).contains(n)), "node ids {nodes:?}");
        // A subnet no other test of this run, or a leftover, uses.
        let subnet = (0..250)
            .map(|attempt| {
                let made = NETWORKS_MADE.fetch_add(1, Ordering::Relaxed);
                u8::try_from((std::process::id() + made * 37 + attempt) % 250 + 1).unwrap()
            })
            // Namespaces die asynchronously after `ip netns del`: their links
            // may outlive the name for a moment.
            .find(|subnet| {
                !Path::new(&format!("/run/netns/shardline-{subnet}-{}", nodes[0])).exists()
                    && !Path::new(&format!("/sys/class/net/s{subnet}r{}", nodes[0])).exists()
            })
            .expect("a free subnet");
        let network = Network {
            subnet,
            nodes: nodes.to_vec(),
            losses: RefCell::default(),
        };
        let client = network.client_address().to_string();
        for &node in nodes {
            let ns = network.namespace(node);
            let address = network.address(node).to_string();
            ip(&["netns", "add", &ns]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&["-n", &ns, "addr", "add", &format!("{address}/32"), "dev", "lo"]);
            let (outside, inside) = (network.client_link(node), format!("s{subnet}c{node}"));
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside, "netns", &ns,
            ]);
            ip(&["addr", "add", &format!("{client}/32"), "dev", &outside]);
            ip(&["link", "set", &outside, "up"]);
            ip(&["-n", &ns, "link", "set", &inside, "up"]);
            ip(&[
                "route",
                "add",
                &format!("{address}/32"),
                "dev",
                &outside,
                "src",
                &client,
            ]);
            ip(&[
                "-n",
                &ns,
                "route",
                "add",
                &format!("{client}/32"),
                "dev",
                &inside,
                "src",
                &address,
            ]);
        }
        for (i, &a) in nodes.iter().enumerate() {
            for &b in nodes.iter().skip(i + 1) {
                let (ns_a, ns_b) = (network.namespace(a), network.namespace(b));
                let (link_a, link_b) = (network.peer_link(a, b), network.peer_link(b, a));
                ip(&[
                    "link", "add", &link_a, "netns", &ns_a, "type", "veth", "peer", "name", &link_b, "netns", &ns_b,
                ]);
                for (ns, link, from, to) in [(&ns_a, &link_a, a, b), (&ns_b, &link_b, b, a)] {
                    ip(&["-n", ns, "link", "set", link, "up"]);
                    let (from, to) = (network.address(from).to_string(), network.address(to).to_string());
                    ip(&["-n", ns, "route", "add", &format!("{to}/32"), "dev", link, "src", &from]);
                }
            }
        }
        network
    }

    /// Why tests of this kind cannot run here (`None` if they can): not
    /// root, no `ip`, or (with `filters`) no `tc` or working `iptables`.
    /// Checked in a namespace of its own, removed again.
    pub fn unavailable(filters: bool) -> Option<String> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Some("not root (network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN)".to_string());
        }
        if !runs("ip", &["-V"]) {
            return Some("iproute2's `ip` is missing".to_string());
        }
        if filters && !runs("tc", &["-V"]) {
            return Some("iproute2's `tc` is missing".to_string());
        }
        let made = NETWORKS_MADE.fetch_add(1, Ordering::Relaxed);
        let probe = format!("shardline-probe-{}-{made}", std::process::id());
        if !runs("ip", &["netns", "add", &probe]) {
            return Some("`ip netns add` failed (no CAP_SYS_ADMIN in this container?)".to_string());
        }
        let works = !filters
            || runs(
                "ip",
                &[
                    "netns",
                    "exec",
                    &probe,
                    "iptables",
                    "-w",
                    "-A",
                    "OUTPUT",
                    "-o",
                    "lo",
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    "0.5",
                    "-j",
                    "DROP",
                ],
            );
        let _ = Command::new("ip").args(["netns", "del", &probe]).status();
        (!works).then(|| {
            "`iptables` (with the statistic match) does not work in a namespace: install the iptables package"
                .to_string()
        })
    }

    /// Node `node`'s address (on its namespace's loopback).
    pub fn address(&self, node: i32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 78, self.subnet, u8::try_from(node).unwrap()))
    }

    fn client_address(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 78, self.subnet, CLIENT_HOST))
    }

    /// The namespace node `node` runs in (`ip netns exec NAME ...`).
    pub fn namespace(&self, node: i32) -> String {
        format!("shardline-{}-{node}", self.subnet)
    }

    fn client_link(&self, node: i32) -> String {
        format!("s{}r{node}", self.subnet)
    }

    /// Node `from`'s end of its link to node `to`.
    fn peer_link(&self, from: i32, to: i32) -> String {
        format!("s{}m{from}x{to}", self.subnet)
    }

    /// Cuts (`true`) or restores the link between nodes `a` and `b`. A link
    /// set down loses its routes (the kernel drops them), so restoring one
    /// puts them back.
    pub fn cut(&self, a: i32, b: i32, cut: bool) {
        let state = if cut { "down" } else { "up" };
        for (from, to) in [(a, b), (b, a)] {
            let (ns, link) = (self.namespace(from), self.peer_link(from, to));
            ip(&["-n", &ns, "link", "set", &link, state]);
        }
        if !cut {
            for (from, to) in [(a, b), (b, a)] {
                let (ns, link) = (self.namespace(from), self.peer_link(from, to));
                let (from, to) = (self.address(from).to_string(), self.address(to).to_string());
                ip(&[
                    "-n",
                    &ns,
                    "route",
                    "replace",
                    &format!("{to}/32"),
                    "dev",
                    &link,
                    "src",
                    &from,
                ]);
            }
        }
    }

    /// Cuts (`true`) or restores every link between `node` and the other
    /// nodes; its link to the test process (its clients) stays up.
    pub fn isolate_from_peers(&self, node: i32, isolated: bool) {
        for &other in self.nodes.iter().filter(|&&other| other != node) {
            self.cut(node, other, isolated);
        }
    }

    /// Drops (`true`) or lets through again everything node `from` sends
    /// node `to` on their link: a one-way partition. `to` still reaches
    /// `from`, but a TCP connection between them stalls either way (its
    /// acknowledgements are lost), as on a real half-broken link; what
    /// differs is who notices first.
    pub fn drop_one_way(&self, from: i32, to: i32, dropped: bool) {
        let action = if dropped { "-A" } else { "-D" };
        let link = self.peer_link(from, to);
        iptables(&self.namespace(from), &[action, "OUTPUT", "-o", &link, "-j", "DROP"]);
    }

    /// Drops `percent` % of the packets either node sends the other on
    /// their link, at random (`0` restores the link).
    pub fn lossy(&self, a: i32, b: i32, percent: u32) {
        assert!(percent < 100, "a loss of {percent} % is a cut");
        for (from, to) in [(a, b), (b, a)] {
            let (ns, link) = (self.namespace(from), self.peer_link(from, to));
            let rule = |action: &str, probability: &str| {
                iptables(
                    &ns,
                    &[
                        action,
                        "OUTPUT",
                        "-o",
                        &link,
                        "-m",
                        "statistic",
                        "--mode",
                        "random",
                        "--probability",
                        probability,
                        "-j",
                        "DROP",
                    ],
                );
            };
            // A rule is deleted by repeating it: the map keeps what was added.
            let mut losses = self.losses.borrow_mut();
            if let Some(previous) = losses.remove(&(from, to)) {
                rule("-D", &previous);
            }
            if percent > 0 {
                let probability = format!("{:.2}", f64::from(percent) / 100.0);
                rule("-A", &probability);
                losses.insert((from, to), probability);
            }
        }
    }

    /// Caps the link between `a` and `b` at `kbit` kbit/s each way, with a
    /// queue of up to `queue_ms` ms at that rate (what does not fit is
    /// dropped); `None` removes the cap. Under load the queue delays every
    /// packet behind it: this kernel has no netem for a fixed delay.
    pub fn slow(&self, a: i32, b: i32, cap: Option<(u32, u32)>) {
        for (from, to) in [(a, b), (b, a)] {
            let (ns, link) = (self.namespace(from), self.peer_link(from, to));
            match cap {
                Some((kbit, queue_ms)) => tc(
                    &ns,
                    &[
                        "qdisc",
                        "replace",
                        "dev",
                        &link,
                        "root",
                        "tbf",
                        "rate",
                        &format!("{kbit}kbit"),
                        "burst",
                        "16kb",
                        "latency",
                        &format!("{queue_ms}ms"),
                    ],
                ),
                None => {
                    let _ = Command::new("tc")
                        .args(["-n", &ns, "qdisc", "del", "dev", &link, "root"])
                        .output();
                }
            }
        }
    }
}

impl Drop for Network {
    /// Deleting a namespace deletes the veth ends in it, and so their peers.
    fn drop(&mut self) {
        for &node in &self.nodes {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.namespace(node)])
                .status();
        }
    }
}
