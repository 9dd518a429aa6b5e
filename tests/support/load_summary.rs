//! The `airbag load` summary line contract, checked by the library and the
//! binary tests alike.
#![allow(dead_code)]

/// The summary line is exactly the contract's fields, in order, each with a
/// number (or `n/a` where the contract allows none), then, when alerts were
/// matched, the three `server_*_us` fields and the three `delivered_*_us`
/// fields.
pub fn assert_summary_line(line: &str) {
    let rest = line.strip_prefix("summary: ").expect("summary prefix");
    let fields: Vec<(&str, &str)> = rest
        .split(' ')
        .map(|kv| kv.split_once('=').expect("key=value"))
        .collect();
    let keys: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
    // Then, when alerts were matched, the server's receive-to-emit triple
    // and the receive-to-subscriber triple.
    let (keys, matched) = keys.split_at(keys.len().min(12));
    assert!(
        matched.is_empty()
            || matched
                == [
                    "server_p50_us",
                    "server_p99_us",
                    "server_max_us",
                    "delivered_p50_us",
                    "delivered_p99_us",
                    "delivered_max_us"
                ],
        "{line}"
    );
    assert_eq!(
        keys,
        [
            "ticks",
            "seconds",
            "ticks_per_s",
            "p50_us",
            "p90_us",
            "p99_us",
            "p999_us",
            "max_us",
            "alerts",
            "missing",
            "unexpected",
            "server_cpu_ns_per_tick"
        ]
    );
    for (k, v) in fields {
        let ok = v.parse::<f64>().is_ok() || (k == "server_cpu_ns_per_tick" && v == "n/a");
        assert!(ok, "{k}={v} in {line}");
    }
}

/// The value of `key` on a summary line.
pub fn summary_field<'a>(line: &'a str, key: &str) -> &'a str {
    line.trim_start_matches("summary: ")
        .split(' ')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .unwrap_or_default()
}
