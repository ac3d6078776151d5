//! A one-line progress display for `ferromq produce` and `consume -n` on a terminal: the line is
//! redrawn in place with `\r` (count, total, a bar, the rate), at most every
//! [`REDRAW_INTERVAL`], and ended with a newline when done. When stderr is not a terminal
//! (piped, redirected to a file, run by a script) nothing is written at all, so logs and
//! scripts see only the final summary line.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Most redraws per second: enough to look live, few enough to cost nothing at 100k msg/s.
pub const REDRAW_INTERVAL: Duration = Duration::from_millis(100);

/// Characters of the bar between its brackets.
const BAR_WIDTH: usize = 30;

/// The progress of `total` items, drawn on `out` when enabled.
#[derive(Debug)]
pub struct Progress<W: Write> {
    out: Option<W>,
    verb: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    last_draw: Option<Instant>,
}

impl Progress<std::io::Stderr> {
    /// Progress on stderr, drawn only when stderr is a terminal.
    pub fn stderr(verb: &'static str, total: u64) -> Self {
        let err = std::io::stderr();
        let enabled = err.is_terminal();
        Progress::new(enabled.then_some(err), verb, total)
    }
}

impl<W: Write> Progress<W> {
    /// Progress drawn on `out` (`None`: silent). `verb` names what is counted: "sent".
    pub fn new(out: Option<W>, verb: &'static str, total: u64) -> Self {
        Progress {
            out,
            verb,
            total,
            done: 0,
            started: Instant::now(),
            last_draw: None,
        }
    }

    /// One more item done; redraws when the last draw is old enough.
    pub fn inc(&mut self) {
        self.done += 1;
        if self.out.is_none() {
            return;
        }
        let now = Instant::now();
        if self
            .last_draw
            .is_none_or(|t| now.duration_since(t) >= REDRAW_INTERVAL)
        {
            self.last_draw = Some(now);
            self.draw(now);
        }
    }

    /// Draws the final state and ends the line (nothing when silent); hands the writer back.
    pub fn finish(mut self) -> Option<W> {
        if self.out.is_some() {
            self.draw(Instant::now());
        }
        if let Some(out) = self.out.as_mut() {
            let _ = out.write_all(b"\n");
            let _ = out.flush();
        }
        self.out
    }

    fn draw(&mut self, now: Instant) {
        let line = render(
            self.verb,
            self.done,
            self.total,
            now.duration_since(self.started),
        );
        if let Some(out) = self.out.as_mut() {
            // A failed write to a terminal is not worth failing the command for.
            let _ = write!(out, "\r{line}");
            let _ = out.flush();
        }
    }
}

/// The line: `sent 250/1000 [#######.......................]  25% 1234 msg/s`.
pub fn render(verb: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-3);
    if total == 0 {
        return format!("{verb} {done} {rate:.0} msg/s");
    }
    let done_shown = done.min(total);
    let filled = (done_shown as u128 * BAR_WIDTH as u128 / total as u128) as usize;
    let pct = done_shown as u128 * 100 / total as u128;
    format!(
        "{verb} {done}/{total} [{}{}] {pct:>3}% {rate:.0} msg/s",
        "#".repeat(filled),
        ".".repeat(BAR_WIDTH - filled)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_count_bar_percent_and_rate() {
        let l = render("sent", 250, 1000, Duration::from_secs(2));
        assert_eq!(
            l,
            format!(
                "sent 250/1000 [{}{}]  25% 125 msg/s",
                "#".repeat(7),
                ".".repeat(23)
            )
        );
        let full = render("received", 10, 10, Duration::from_secs(1));
        assert!(
            full.contains(&format!("[{}] 100%", "#".repeat(30))),
            "{full}"
        );
        // No total (consume without -n): no bar.
        assert_eq!(
            render("received", 5, 0, Duration::from_secs(1)),
            "received 5 5 msg/s"
        );
    }

    #[test]
    fn a_terminal_gets_redrawn_lines_and_a_newline_at_the_end() {
        let mut p = Progress::new(Some(Vec::new()), "sent", 3);
        for _ in 0..3 {
            p.inc();
        }
        let text = String::from_utf8(p.finish().unwrap()).unwrap();
        // The first inc draws at once (the others may fall within the redraw interval); the
        // finish draws the final count and ends the line.
        assert!(text.starts_with("\rsent 1/3 ["), "{text:?}");
        let last = text.rsplit('\r').next().unwrap();
        assert!(last.starts_with("sent 3/3 ["), "{text:?}");
        assert!(last.contains("100%"), "{text:?}");
        assert!(
            text.ends_with('\n') && text.matches('\n').count() == 1,
            "{text:?}"
        );
    }

    #[test]
    fn silent_progress_writes_nothing() {
        let mut p: Progress<Vec<u8>> = Progress::new(None, "sent", 3);
        for _ in 0..3 {
            p.inc();
        }
        assert!(p.finish().is_none());
    }
}
