//! A form as a worker hands it on: XLSX (rust_xlsxwriter), CSV (UTF-8 with a byte-order mark, as
//! Excel in a Chinese locale expects to recognise UTF-8), or aligned text for a terminal. Text
//! that came from devices (plates, device and lane names, ids) is escaped against formula
//! injection: a cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading
//! apostrophe, so a spreadsheet shows it as text and never evaluates it.
use super::{Cell, Form};
use anyhow::Context;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Xlsx,
    Csv,
    Text,
}

impl Format {
    /// From a file's extension; text otherwise.
    pub fn of(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("xlsx") => Format::Xlsx,
            Some("csv") => Format::Csv,
            _ => Format::Text,
        }
    }
}

/// A cell's text as a spreadsheet must get it.
pub fn defused(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    }
}

fn plain(c: &Cell) -> String {
    match c {
        Cell::Text(s) => defused(s),
        Cell::Int(n) => n.to_string(),
        Cell::Num(x) => format!("{x:.2}"),
        Cell::Empty => String::new(),
    }
}

pub fn write(form: &Form, format: Format, path: &Path) -> anyhow::Result<()> {
    match format {
        Format::Xlsx => {
            std::fs::write(path, xlsx(form)?).with_context(|| path.display().to_string())
        }
        Format::Csv => std::fs::write(path, csv(form)).with_context(|| path.display().to_string()),
        Format::Text => {
            std::fs::write(path, text(form)).with_context(|| path.display().to_string())
        }
    }
}

pub fn csv(form: &Form) -> Vec<u8> {
    let field = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut out = String::from("\u{feff}");
    let line =
        |cells: Vec<String>| cells.iter().map(|c| field(c)).collect::<Vec<_>>().join(",") + "\r\n";
    out.push_str(&line(vec![form.title.clone()]));
    out.push_str(&line(vec![form.subtitle.clone()]));
    out.push_str(&line(form.headers.iter().map(|h| h.to_string()).collect()));
    for r in &form.rows {
        out.push_str(&line(r.iter().map(plain).collect()));
    }
    for n in &form.notes {
        out.push_str(&line(vec![n.clone()]));
    }
    out.into_bytes()
}

pub fn text(form: &Form) -> String {
    let mut out = format!("{}  {}\n", form.title, form.subtitle);
    let cells: Vec<Vec<String>> =
        std::iter::once(form.headers.iter().map(|h| h.to_string()).collect())
            .chain(form.rows.iter().map(|r| r.iter().map(plain).collect()))
            .collect();
    let width = |s: &str| {
        s.chars()
            .map(|c| if c.is_ascii() { 1 } else { 2 })
            .sum::<usize>()
    };
    let cols = form.headers.len();
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            cells
                .iter()
                .filter_map(|r| r.get(i))
                .map(|c| width(c))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in &cells {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c}{}", " ".repeat(widths[i].saturating_sub(width(c)))))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    for n in &form.notes {
        out.push_str(n);
        out.push('\n');
    }
    out
}

/// The form as an XLSX file's bytes.
pub fn xlsx(form: &Form) -> anyhow::Result<Vec<u8>> {
    use rust_xlsxwriter::{Format as Style, Workbook};
    let mut book = Workbook::new();
    let sheet = book.add_worksheet();
    sheet.set_name(&form.title)?;
    let bold = Style::new().set_bold();
    sheet.write_string_with_format(0, 0, &form.title, &bold)?;
    sheet.write_string(1, 0, &form.subtitle)?;
    for (i, h) in form.headers.iter().enumerate() {
        sheet.write_string_with_format(3, i as u16, *h, &bold)?;
    }
    for (r, row) in form.rows.iter().enumerate() {
        let r = 4 + r as u32;
        for (c, cell) in row.iter().enumerate() {
            let c = c as u16;
            match cell {
                // Written as strings, never formulas; defused as well, for whoever copies them
                // into a CSV or another sheet later.
                Cell::Text(s) => sheet.write_string(r, c, defused(s))?,
                Cell::Int(n) => sheet.write_number(r, c, *n as f64)?,
                Cell::Num(x) => sheet.write_number(r, c, *x)?,
                Cell::Empty => sheet,
            };
        }
    }
    let after = 5 + form.rows.len() as u32;
    for (i, n) in form.notes.iter().enumerate() {
        sheet.write_string(after + i as u32, 0, n)?;
    }
    book.save_to_buffer().context("writing the XLSX")
}
