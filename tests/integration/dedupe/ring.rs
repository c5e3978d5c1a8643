//! Several memcached servers: keys go where Ruby Chore (Dalli) would look for them.

use crate::harness::*;
use crate::support::memcached::Memcached;

// ---------------------------------------------------------------------------------------
// Dalli's ring, written from Dalli's Ruby (Dalli::Ring), to check where chore puts keys.

/// The server (index into `servers`, named `host:port` as Dalli names them) that Dalli
/// picks for `key`: 160 points per server at the first 8 hex digits of
/// SHA1("name:i"), sorted; the key's CRC32; the last point not above it (Dalli's
/// `binary_search` returns `upper`, and `continuum[-1]` wraps to the last point).
fn dalli_server_for(servers: &[String], key: &str) -> usize {
    if servers.len() == 1 {
        return 0;
    }
    let mut continuum: Vec<(u64, usize)> = Vec::new();
    for (s, name) in servers.iter().enumerate() {
        for idx in 0..160 {
            let hex = sha1_smol::Sha1::from(format!("{name}:{idx}"))
                .digest()
                .to_string();
            continuum.push((u64::from_str_radix(&hex[..8], 16).unwrap(), s));
        }
    }
    continuum.sort_by_key(|&(v, _)| v);
    let hkey = crc32fast::hash(key.as_bytes()) as u64;
    let (mut lower, mut upper) = (0i64, continuum.len() as i64 - 1);
    while lower <= upper {
        let idx = (lower + upper) / 2;
        let v = continuum[idx as usize].0;
        if v == hkey {
            return continuum[idx as usize].1;
        } else if v > hkey {
            upper = idx - 1;
        } else {
            lower = idx + 1;
        }
    }
    let i = if upper < 0 {
        continuum.len() - 1
    } else {
        upper as usize
    };
    continuum[i].1
}

// ---------------------------------------------------------------------------------------
// Several servers.

#[test]
fn dedupe_keys_spread_over_two_servers_on_dallis_ring() {
    let (a, b) = (Memcached::start(), Memcached::start());
    let sb = Sandbox::new("dedupe-two");
    sb.ok_batch_handler("batch.sh", "", "echo \"$id\" >> done.txt");
    sb.chorefile(&format!(
        "dedupe-servers = \"{},{}\"\n[queues.jobs]\n\
         handler = {{ command = [\"./batch.sh\"], mode = \"batch\" }}\ntimeout = 60\ndedupe = true\n",
        a.addr(),
        b.addr()
    ));
    let lines: String = (0..50).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    let ids: Vec<String> = sb
        .enqueue_lines(&["jobs", "-"], Some(&lines), &[])
        .iter()
        .map(|n| id_of(n))
        .collect();
    assert_eq!(ids.len(), 50);
    let mut master = sb.start(&[]);
    master.wait("all 50 jobs", || sb.lines("done.txt").len() >= 50);
    master.wait("the queue to empty", || sb.queue("jobs").is_idle());
    assert_eq!(sb.lines("done.txt").len(), 50);

    let names = [a.addr(), b.addr()];
    let mut on = [0usize; 2];
    for id in &ids {
        let held = [a.get(id).is_some(), b.get(id).is_some()];
        assert!(
            held[0] ^ held[1],
            "{id} must be on exactly one server: on {}: {}, on {}: {}",
            names[0],
            held[0],
            names[1],
            held[1]
        );
        let server = if held[0] { 0 } else { 1 };
        on[server] += 1;
        assert_eq!(
            server,
            dalli_server_for(&names, id),
            "{id} is not where Dalli (Ruby Chore) would look for it"
        );
    }
    eprintln!("dedupe two servers: keys per server {on:?}");
    assert!(on.iter().all(|&n| n > 0), "keys per server {on:?}");
    assert_eq!(master.stop().code(), Some(0));
}
