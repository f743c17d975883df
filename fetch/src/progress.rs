//! Progress lines on stderr: one per file every few seconds while it downloads, and one when
//! it is done or skipped. The formatting is pure; [`Progress`] only decides when to print.

use std::time::{Duration, Instant};

const PRINT_EVERY: Duration = Duration::from_secs(2);

/// `1.5 GiB`, `12.0 MiB`, `512 B`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Bytes per second over `elapsed`, as `human_bytes` + `/s`.
pub fn human_rate(bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return "-".to_string();
    }
    format!("{}/s", human_bytes((bytes as f64 / secs) as u64))
}

/// `fetch: model.safetensors 1.0 GiB / 2.0 GiB (50%) 110.3 MiB/s`
pub fn progress_line(file: &str, done: u64, total: Option<u64>, rate: &str) -> String {
    match total {
        Some(total) if total > 0 => format!(
            "fetch: {file} {} / {} ({}%) {rate}",
            human_bytes(done),
            human_bytes(total),
            done.saturating_mul(100) / total
        ),
        _ => format!("fetch: {file} {} {rate}", human_bytes(done)),
    }
}

/// Tracks one file's transfer and prints a line at most every [`PRINT_EVERY`].
pub struct Progress<'a> {
    file: &'a str,
    total: Option<u64>,
    done: u64,
    /// Bytes moved in this run (not counting a resumed prefix), for the rate.
    moved: u64,
    started: Instant,
    last_print: Instant,
}

impl<'a> Progress<'a> {
    pub fn new(file: &'a str, total: Option<u64>, resumed_at: u64) -> Self {
        if resumed_at > 0 {
            eprintln!("fetch: {file} resuming at {}", human_bytes(resumed_at));
        }
        let now = Instant::now();
        Self {
            file,
            total,
            done: resumed_at,
            moved: 0,
            started: now,
            last_print: now,
        }
    }

    pub fn advance(&mut self, bytes: u64) {
        self.done += bytes;
        self.moved += bytes;
        if self.last_print.elapsed() >= PRINT_EVERY {
            self.last_print = Instant::now();
            let rate = human_rate(self.moved, self.started.elapsed());
            eprintln!("{}", progress_line(self.file, self.done, self.total, &rate));
        }
    }

    pub fn finish(&self) {
        eprintln!(
            "fetch: {} done, {} in {:.1}s ({})",
            self.file,
            human_bytes(self.done),
            self.started.elapsed().as_secs_f64(),
            human_rate(self.moved, self.started.elapsed())
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_like_a_person_writes_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert_eq!(human_rate(10 << 20, Duration::from_secs(2)), "5.0 MiB/s");
        assert_eq!(human_rate(1, Duration::ZERO), "-");
    }

    #[test]
    fn progress_lines_name_the_file_and_the_share_done() {
        assert_eq!(
            progress_line("model.safetensors", 1 << 30, Some(2 << 30), "9.0 MiB/s"),
            "fetch: model.safetensors 1.0 GiB / 2.0 GiB (50%) 9.0 MiB/s"
        );
        assert_eq!(
            progress_line("config.json", 700, None, "1.0 KiB/s"),
            "fetch: config.json 700 B 1.0 KiB/s"
        );
    }
}
