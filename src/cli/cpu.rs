//! CPU time, for "CPU nanoseconds per tick" in `airbag load`: this
//! process's through `getrusage`, another process's through
//! `/proc/PID/stat` (Linux).
//!
//! Unsafe code is allowed here: calls into libc (`getrusage`, `sysconf`).
#![allow(unsafe_code)]

use std::io;

/// User plus system CPU time of this process (all threads), nanoseconds.
///
/// # Errors
/// `getrusage` failed (it does not for `RUSAGE_SELF` in practice).
pub fn self_cpu_ns() -> io::Result<u64> {
    // SAFETY: `rusage` is plain old data, so all-zero is a valid value, and
    // getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a live `rusage`, and RUSAGE_SELF is a valid `who`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let ns = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1_000;
    Ok(ns(usage.ru_utime) + ns(usage.ru_stime))
}

/// User plus system CPU time of process `pid` (all threads, including
/// those that exited), nanoseconds. The kernel counts it in clock ticks
/// (usually 10 ms), so measure over seconds.
///
/// # Errors
/// The process does not exist or `/proc` cannot be read or parsed.
pub fn process_cpu_ns(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = parse_stat_cpu_ticks(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("cannot parse /proc/{pid}/stat")))?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = if per_second > 0 { per_second as u64 } else { 100 };
    Ok(ticks.saturating_mul(1_000_000_000) / per_second)
}

/// `utime + stime` (fields 14 and 15) of a `/proc/PID/stat` line. The
/// command name (field 2) is in parentheses and may itself hold spaces or
/// parentheses, so fields are counted from the last `)`.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name: field 3 (state) is index 0, so utime (14) is index 11.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_awkward_names() {
        let line = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 5 0 100 0 0";
        assert_eq!(parse_stat_cpu_ticks(line), Some(325));
    }

    #[test]
    fn reads_own_cpu_time_both_ways() {
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(self_cpu_ns().unwrap() > 0);
        assert!(process_cpu_ns(std::process::id()).is_ok());
        assert!(process_cpu_ns(u32::MAX).is_err());
    }
}
