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
//! setting that link down. (This machine's kernel has no netfilter and no
//! `netem`/`prio` queueing disciplines, so links are cut whole: no loss,
//! delay or one-way cuts.) Needs root and iproute2's `ip`.

use std::{
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

/// The namespaces and links of one test's nodes.
pub struct Network {
    /// Third octet of the subnet, and part of every interface name.
    subnet: u8,
    nodes: Vec<i32>,
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
