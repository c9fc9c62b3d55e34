//! `sluice top [--api ADDR]`: a live view of every component of a running
//! daemon, read from its `/metrics` once a second (ratatui over crossterm).
//!
//! Columns: events/s in and out, bytes/s read (sources), errors and drops
//! (totals), buffer fill (sinks), acknowledgement latency p99 (sources that wait
//! for acknowledgements; the bucket bound holding the 99th percentile over the
//! last second, or over all time when the second saw none). Keys: `q` (or Esc,
//! Ctrl-C) quits with exit 0; `←`/`→` or `s` choose the sort column; `r` reverses.
//! A failed scrape is shown in the title and retried, the last figures kept.

mod model;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::Constraint;
use ratatui::style::{Modifier, Style};
use ratatui::widgets::{Block, Row as TableRow, Table};
use ratatui::{DefaultTerminal, Frame};

use model::{Row, Scrape};

const REFRESH: Duration = Duration::from_secs(1);

/// The columns, in order: title and width.
const COLUMNS: [(&str, u16); 10] = [
    ("COMPONENT", 20),
    ("KIND", 7),
    ("TYPE", 10),
    ("IN/s", 10),
    ("OUT/s", 10),
    ("BYTES/s", 10),
    ("ERRORS", 9),
    ("DROPS", 9),
    ("BUFFER", 7),
    ("ACK p99", 9),
];

struct App {
    api: SocketAddr,
    prev: Option<Scrape>,
    rows: Vec<Row>,
    error: Option<String>,
    sort: usize,
    reverse: bool,
}

/// Run the view until `q`.
pub fn main(api: SocketAddr) -> ExitCode {
    // Fail before taking over the terminal when nothing answers.
    if let Err(e) = super::http::get_text(api, "/metrics") {
        eprintln!("sluice top: {e}");
        return ExitCode::FAILURE;
    }
    let mut terminal = ratatui::init();
    let result = run(&mut terminal, api);
    ratatui::restore();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice top: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(terminal: &mut DefaultTerminal, api: SocketAddr) -> std::io::Result<()> {
    let mut app = App {
        api,
        prev: None,
        rows: Vec::new(),
        error: None,
        sort: 0,
        reverse: false,
    };
    let mut next = Instant::now();
    loop {
        if Instant::now() >= next {
            app.refresh();
            next = Instant::now() + REFRESH;
        }
        terminal.draw(|f| app.draw(f))?;
        if event::poll(next.saturating_duration_since(Instant::now()))?
            && let Event::Key(k) = event::read()?
            && k.kind == KeyEventKind::Press
        {
            match k.code {
                KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => return Ok(()),
                KeyCode::Right | KeyCode::Char('s') => app.sort = (app.sort + 1) % COLUMNS.len(),
                KeyCode::Left => app.sort = (app.sort + COLUMNS.len() - 1) % COLUMNS.len(),
                KeyCode::Char('r') => app.reverse = !app.reverse,
                _ => {}
            }
            app.sort_rows();
        }
    }
}

impl App {
    fn refresh(&mut self) {
        match super::http::get_text(self.api, "/metrics") {
            Ok(text) => {
                let now = Scrape::new(Instant::now(), &model::parse(&text));
                self.rows = model::rows(self.prev.as_ref(), &now);
                self.prev = Some(now);
                self.error = None;
                self.sort_rows();
            }
            Err(e) => self.error = Some(e),
        }
    }

    fn sort_rows(&mut self) {
        let by = self.sort;
        let num = |r: &Row| -> f64 {
            match by {
                3 => r.in_rate,
                4 => r.out_rate,
                5 => r.bytes_rate,
                6 => r.errors,
                7 => r.discarded,
                8 => r.fill.unwrap_or(-1.0),
                _ => r.ack_p99.unwrap_or(-1.0),
            }
        };
        self.rows.sort_by(|a, b| {
            let text = |r: &Row| match by {
                1 => (r.kind.clone(), r.name.clone()),
                2 => (r.type_name.clone(), r.name.clone()),
                _ => (kind_order(&r.kind).to_string(), r.name.clone()),
            };
            match by {
                0..=2 => text(a).cmp(&text(b)),
                // Numbers: largest first.
                _ => num(b).total_cmp(&num(a)),
            }
        });
        if self.reverse {
            self.rows.reverse();
        }
    }

    fn draw(&self, f: &mut Frame) {
        let header = TableRow::new(COLUMNS.iter().enumerate().map(|(i, (name, _))| {
            if i == self.sort {
                format!("{name}{}", if self.reverse { "^" } else { "v" })
            } else {
                (*name).to_owned()
            }
        }))
        .style(Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED));
        let rows = self.rows.iter().map(|r| {
            TableRow::new([
                r.name.clone(),
                r.kind.clone(),
                r.type_name.clone(),
                rate(r.in_rate),
                rate(r.out_rate),
                if r.kind == "source" {
                    bytes(r.bytes_rate)
                } else {
                    "-".into()
                },
                count(r.errors),
                count(r.discarded),
                r.fill.map_or("-".into(), |x| format!("{:.0}%", x * 100.0)),
                r.ack_p99.map_or("-".into(), seconds),
            ])
        });
        let title = match &self.error {
            Some(e) => format!(" sluice top — {} — {e} ", self.api),
            None => format!(
                " sluice top — {} — {} components — q quit, ←/→ sort, r reverse ",
                self.api,
                self.rows.len()
            ),
        };
        let table = Table::new(rows, COLUMNS.iter().map(|(_, w)| Constraint::Length(*w)))
            .header(header)
            .block(Block::bordered().title(title));
        f.render_widget(table, f.area());
    }
}

fn kind_order(kind: &str) -> u8 {
    match kind {
        "source" => 0,
        "route" => 1,
        "sink" => 2,
        _ => 3,
    }
}

fn scaled(v: f64, unit: &str) -> String {
    let (v, p) = match v {
        v if v >= 1e9 => (v / 1e9, "G"),
        v if v >= 1e6 => (v / 1e6, "M"),
        v if v >= 1e4 => (v / 1e3, "k"),
        v => (v, ""),
    };
    if p.is_empty() && v.fract() == 0.0 {
        format!("{v:.0}{unit}")
    } else {
        format!("{v:.1}{p}{unit}")
    }
}

fn rate(v: f64) -> String {
    scaled(v.round(), "")
}

fn count(v: f64) -> String {
    scaled(v, "")
}

fn bytes(v: f64) -> String {
    scaled(v.round(), "B")
}

fn seconds(s: f64) -> String {
    if s.is_infinite() {
        ">30s".into()
    } else if s < 1.0 {
        format!("≤{}ms", s * 1000.0)
    } else {
        format!("≤{s}s")
    }
}
