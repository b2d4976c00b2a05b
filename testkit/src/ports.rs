//! Free ports on 127.0.0.1.

use std::net::TcpListener;

/// Attempts at finding `count` consecutive free ports.
const PORT_RUN_ATTEMPTS: usize = 100;

/// The first of `count` consecutive ports nobody listens on now (all bound
/// at once, then released): shard k of an engine listens on its `--listen`
/// port + k.
pub fn free_port_run(count: usize) -> u16 {
    for _ in 0..PORT_RUN_ATTEMPTS {
        let first = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = first.local_addr().unwrap().port();
        let rest: Option<Vec<TcpListener>> = (1..count)
            .map(|k| {
                let port = base.checked_add(u16::try_from(k).ok()?)?;
                TcpListener::bind(("127.0.0.1", port)).ok()
            })
            .collect();
        if rest.is_some() {
            return base;
        }
    }
    panic!("no run of {count} free ports in {PORT_RUN_ATTEMPTS} attempts");
}
