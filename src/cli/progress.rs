//! Progress of a long offline job: a bar redrawn in place on a terminal, plain lines (at
//! most one every few seconds) otherwise, so logs and pipes stay readable.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often a plain progress line is written when not on a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);
const BAR_WIDTH: usize = 30;

pub struct Progress {
    what: &'static str,
    total: u64,
    terminal: bool,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    /// Progress to stderr of `total` units of `what` ("events embedded"); 0: not known.
    pub fn new(what: &'static str, total: u64) -> Self {
        let now = Instant::now();
        Self { what, total, terminal: std::io::stderr().is_terminal(), started: now, last_line: now }
    }

    pub fn update(&mut self, done: u64) {
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        let mut err = std::io::stderr().lock();
        // A total that was only a guess and was passed: counted without one.
        if self.total > 0 && done > self.total {
            self.total = 0;
        }
        if self.terminal && self.total == 0 {
            let _ = write!(err, "\r{done} {} ({rate:.0}/s)  ", self.what);
            let _ = err.flush();
        } else if self.terminal {
            let filled = (done.min(self.total) * BAR_WIDTH as u64).checked_div(self.total).map_or(BAR_WIDTH, |f| f as usize);
            let _ = write!(
                err,
                "\r[{}{}] {done}/{} {} ({rate:.0}/s)  ",
                "#".repeat(filled),
                ".".repeat(BAR_WIDTH - filled),
                self.total,
                self.what
            );
            let _ = err.flush();
        } else if self.last_line.elapsed() >= PLAIN_EVERY || (self.total > 0 && done >= self.total) {
            self.last_line = Instant::now();
            match self.total {
                0 => writeln!(err, "{done} {} ({rate:.0}/s)", self.what),
                total => writeln!(err, "{done} of {total} {} ({rate:.0}/s)", self.what),
            }
            .ok();
        }
    }

    /// Ends the bar's line on a terminal.
    pub fn finish(&mut self) {
        if self.terminal {
            eprintln!();
        }
    }
}
