//! Text tables (aligned plain columns or markdown) and the number formats the tables share.

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table of string cells; rendered as aligned columns or as markdown.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    aligns: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers and alignments.
    pub fn new(columns: &[(&str, Align)]) -> Table {
        Table {
            headers: columns.iter().map(|(h, _)| (*h).to_owned()).collect(),
            aligns: columns.iter().map(|(_, a)| *a).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; missing cells are blank, extra cells are dropped.
    pub fn row(&mut self, mut cells: Vec<String>) {
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// Renders as markdown when `markdown`, else as plain aligned columns.
    pub fn render(&self, markdown: bool) -> String {
        if markdown {
            self.markdown()
        } else {
            self.plain()
        }
    }

    /// Width of each column: its widest cell, counted in characters (names may not be ASCII).
    fn widths(&self) -> Vec<usize> {
        (0..self.headers.len())
            .map(|c| {
                std::iter::once(&self.headers[c])
                    .chain(self.rows.iter().map(|r| &r[c]))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect()
    }

    /// Columns separated by two spaces, a dashed rule under the header.
    pub fn plain(&self) -> String {
        let widths = self.widths();
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .zip(&self.aligns)
                .map(|((cell, &w), align)| pad(cell, w, *align))
                .collect();
            padded.join("  ").trim_end().to_owned() + "\n"
        };
        let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
        let mut out = line(&self.headers) + &line(&rule);
        for row in &self.rows {
            out += &line(row);
        }
        out
    }

    /// A GitHub-flavoured markdown table; `|` in cells is escaped.
    pub fn markdown(&self) -> String {
        let line = |cells: &[String]| {
            let escaped: Vec<String> = cells.iter().map(|c| c.replace('|', "\\|")).collect();
            format!("| {} |\n", escaped.join(" | "))
        };
        let rule: Vec<String> = self
            .aligns
            .iter()
            .map(|a| match a {
                Align::Left => "---".to_owned(),
                Align::Right => "--:".to_owned(),
            })
            .collect();
        let mut out = line(&self.headers) + &line(&rule);
        for row in &self.rows {
            out += &line(row);
        }
        out
    }
}

fn pad(cell: &str, width: usize, align: Align) -> String {
    let fill = " ".repeat(width.saturating_sub(cell.chars().count()));
    match align {
        Align::Left => format!("{cell}{fill}"),
        Align::Right => format!("{fill}{cell}"),
    }
}

/// A byte count for people: exact below 1 KiB, else in the largest binary unit with at most
/// one decimal ("128 MiB", "1.5 GiB"; 2^31 - 1 reads "2 GiB").
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        return format!("{n} B");
    }
    let text = format!("{value:.1}");
    let text = text.strip_suffix(".0").unwrap_or(&text);
    format!("{text} {}", UNITS[unit])
}

/// An integer with thousands separators: 65535 reads "65,535".
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A rate with thousands separators and no decimals, the precision a throughput merits.
pub fn rate(per_s: f64) -> String {
    if per_s.is_finite() && per_s >= 0.0 {
        count(per_s.round() as u64)
    } else {
        "-".to_owned()
    }
}

/// Splits `items` joined by ", " into lines of at most `width` characters, each starting with
/// `indent` (the first line included).
pub fn wrap(items: &[String], indent: &str, width: usize) -> String {
    let (mut done, mut line) = (String::new(), indent.to_owned());
    for (i, item) in items.iter().enumerate() {
        let sep = if i + 1 < items.len() { "," } else { "" };
        let fresh = line.len() == indent.len();
        if !fresh && line.chars().count() + 1 + item.chars().count() + sep.len() > width {
            done += &line;
            done.push('\n');
            line = indent.to_owned();
        } else if !fresh {
            line.push(' ');
        }
        line.push_str(item);
        line.push_str(sep);
    }
    done + &line + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(128 << 20), "128 MiB");
        assert_eq!(bytes((1 << 31) - 1), "2 GiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
        assert_eq!(count(65535), "65,535");
        assert_eq!(count(100), "100");
        assert_eq!(count(1_000_000), "1,000,000");
    }

    #[test]
    fn aligns_columns() {
        let mut t = Table::new(&[("a", Align::Left), ("n", Align::Right)]);
        t.row(vec!["xyz".into(), "1".into()]);
        assert_eq!(t.plain(), "a    n\n---  -\nxyz  1\n");
        assert_eq!(t.markdown(), "| a | n |\n| --- | --: |\n| xyz | 1 |\n");
    }

    #[test]
    fn wraps_lists() {
        let items: Vec<String> = ["AAAA", "BBBB", "CCCC"].map(String::from).into();
        assert_eq!(wrap(&items, "  ", 14), "  AAAA, BBBB,\n  CCCC\n");
    }
}
