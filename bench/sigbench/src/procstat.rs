//! Reading a process's memory and CPU time, and the machine's CPU use, from /proc.
//!
//! RSS comes from `/proc/PID/status` (`VmRSS`, `VmHWM`), CPU time from fields 14
//! and 15 of `/proc/PID/stat` (utime + stime, all threads), in clock ticks of
//! `USER_HZ`, which is 100 on every Linux architecture this runs on.

use anyhow::{Context, Result};

/// Clock ticks per second in /proc (`USER_HZ`).
const TICKS_PER_SEC: f64 = 100.0;

/// One look at a process.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// Peak resident set size so far, KiB.
    pub hwm_kib: u64,
    /// User + system CPU time, seconds.
    pub cpu_secs: f64,
}

/// Which process to look at.
#[derive(Debug, Clone, Copy)]
pub enum Pid {
    /// This process.
    Own,
    /// Another process.
    Other(u32),
}

impl Pid {
    fn dir(self) -> String {
        match self {
            Pid::Own => "/proc/self".to_owned(),
            Pid::Other(p) => format!("/proc/{p}"),
        }
    }
}

/// The sums over several processes (the nodes of a cluster and its Redis);
/// `None` if there are none or one cannot be read.
pub fn sample_all(pids: &[u32]) -> Option<ProcSample> {
    if pids.is_empty() {
        return None;
    }
    let mut total = ProcSample {
        rss_kib: 0,
        hwm_kib: 0,
        cpu_secs: 0.0,
    };
    for pid in pids {
        let one = sample(Pid::Other(*pid)).ok()?;
        total.rss_kib += one.rss_kib;
        total.hwm_kib += one.hwm_kib;
        total.cpu_secs += one.cpu_secs;
    }
    Some(total)
}

/// Read RSS and CPU time of a process.
pub fn sample(pid: Pid) -> Result<ProcSample> {
    let dir = pid.dir();
    let status = std::fs::read_to_string(format!("{dir}/status"))
        .with_context(|| format!("reading {dir}/status"))?;
    let field_kib = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("{dir}/stat"))
        .with_context(|| format!("reading {dir}/stat"))?;
    Ok(ProcSample {
        rss_kib: field_kib("VmRSS:"),
        hwm_kib: field_kib("VmHWM:"),
        cpu_secs: parse_stat_cpu_ticks(&stat)? as f64 / TICKS_PER_SEC,
    })
}

/// utime + stime from the text of /proc/PID/stat.
fn parse_stat_cpu_ticks(stat: &str) -> Result<u64> {
    // The command name (field 2) is in parentheses and may hold spaces: count from
    // the last ')'. After it come field 3 (state) onwards; utime is field 14.
    let rest = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 1..))
        .context("malformed /proc/PID/stat")?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields
        .next()
        .context("no utime in stat")?
        .parse()
        .context("bad utime")?;
    let stime: u64 = fields
        .next()
        .context("no stime in stat")?
        .parse()
        .context("bad stime")?;
    Ok(utime + stime)
}

/// The machine's CPU counters from the first line of /proc/stat.
#[derive(Debug, Clone, Copy)]
pub struct MachineSample {
    busy: u64,
    total: u64,
}

/// Read the machine's CPU counters.
pub fn machine() -> Result<MachineSample> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = text.lines().next().context("empty /proc/stat")?;
    let nums: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|n| n.parse().ok())
        .collect();
    let total: u64 = nums.iter().sum();
    // idle and iowait are fields 4 and 5 of the cpu line.
    let idle = nums.get(3).copied().unwrap_or(0) + nums.get(4).copied().unwrap_or(0);
    Ok(MachineSample {
        busy: total.saturating_sub(idle),
        total,
    })
}

impl MachineSample {
    /// Share of all cores busy between `self` (earlier) and `later`, in percent.
    pub fn busy_percent(self, later: MachineSample) -> f64 {
        let total = later.total.saturating_sub(self.total);
        if total == 0 {
            return 0.0;
        }
        later.busy.saturating_sub(self.busy) as f64 * 100.0 / total as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_name() {
        let stat = "1234 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0 1 0";
        assert_eq!(parse_stat_cpu_ticks(stat).ok(), Some(325));
    }

    #[test]
    fn samples_self() {
        let s = sample(Pid::Own).ok();
        assert!(s.is_some_and(|s| s.rss_kib > 0));
    }
}
