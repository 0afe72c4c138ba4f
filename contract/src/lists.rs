//! Resident list files, as the property company exports them.
//!
//! - CSV (`.csv`) with a header naming the columns `person_id,household,status,valid_until`
//!   (any order; `status` and `valid_until` optional).
//! - JSON lines (`.jsonl`, `.ndjson`): one object per line with the same keys.
//!
//! `status` is `active` (default), `quarantined` or `suspended`. `cards` (optional) lists the
//! resident's card and QR numbers, separated by `;` in CSV or as an array in JSON lines: the
//! non-face way in, which the law requires. `valid_until` is empty (no end),
//! a unix time in seconds or milliseconds, `YYYY-MM-DD` (through the end of that day, China
//! Standard Time, UTC+8), or RFC 3339 with an offset (`2027-01-01T00:00:00+08:00`).
use crate::proto::v1;
pub use crate::timefmt::parse_time_ms;
use serde::Deserialize;
use std::hash::{Hash, Hasher};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResidentStatus {
    Active,
    Quarantined,
    Suspended,
}

impl ResidentStatus {
    pub fn parse(s: &str) -> Option<ResidentStatus> {
        match s {
            "active" => Some(ResidentStatus::Active),
            "quarantined" => Some(ResidentStatus::Quarantined),
            "suspended" => Some(ResidentStatus::Suspended),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ResidentStatus::Active => "active",
            ResidentStatus::Quarantined => "quarantined",
            ResidentStatus::Suspended => "suspended",
        }
    }
}

/// What a plate on the list is: a resident's car, one never let in, or one always let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlateKind {
    Resident,
    Blacklist,
    AllowList,
}

impl PlateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PlateKind::Resident => "resident",
            PlateKind::Blacklist => "blacklist",
            PlateKind::AllowList => "allowlist",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub person_id: String,
    pub household: String,
    pub status: ResidentStatus,
    pub valid_until_ms: i64,
    pub cards: Vec<String>,
}

/// At most this many problems are listed; the count of the rest is given.
const MAX_LISTED: usize = 20;

/// The rows, or the first [`MAX_LISTED`] problems and how many more there were.
fn listed<T>(rows: Vec<T>, mut problems: Vec<String>) -> Result<Vec<T>, Vec<String>> {
    if problems.is_empty() {
        return Ok(rows);
    }
    let more = problems.len().saturating_sub(MAX_LISTED);
    problems.truncate(MAX_LISTED);
    if more > 0 {
        problems.push(format!("and {more} more bad lines"));
    }
    Err(problems)
}

/// A line longer than this cannot be a resident: it bounds the file size we read for a limit.
const MAX_LINE: u64 = 256;

/// Reads a resident file, refusing one too large to hold at most `max` residents before
/// reading it (a district-wide list sent to one gate must not take the box's memory).
pub fn read(path: &Path, max: usize) -> Result<String, Vec<String>> {
    let size = std::fs::metadata(path)
        .map_err(|e| vec![format!("cannot read: {e}")])?
        .len();
    let limit = (max as u64 + 1) * MAX_LINE;
    if size > limit {
        return Err(vec![format!(
            "{size} bytes is more than {max} residents can take (registry.max_residents); refused"
        )]);
    }
    std::fs::read_to_string(path).map_err(|e| vec![format!("cannot read: {e}")])
}

pub fn content_hash(text: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    // 0 means "nothing imported yet" in the store.
    h.finish().max(1)
}

/// Parses a whole file; every bad line is a problem with its line number. More than `max`
/// residents is refused.
pub fn parse(path: &Path, text: &str, max: usize) -> Result<Vec<Row>, Vec<String>> {
    let jsonl = path
        .extension()
        .is_some_and(|e| e == "jsonl" || e == "ndjson");
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
    let header: Option<Vec<String>> = if jsonl {
        None
    } else {
        match lines.find(|(_, l)| !l.is_empty()) {
            Some((_, l)) => Some(l.split(',').map(|c| c.trim().to_string()).collect()),
            None => return Ok(rows),
        }
    };
    if let Some(h) = &header {
        for need in ["person_id", "household"] {
            if !h.iter().any(|c| c == need) {
                return Err(vec![format!("line 1: header lacks the {need} column")]);
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (n, line) in lines {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed = match &header {
            None => parse_json_line(line),
            Some(h) => parse_csv_line(h, line),
        };
        match parsed {
            Ok(row) if !seen.insert(row.person_id.clone()) => problems.push(format!(
                "line {n}: person_id {:?} listed twice",
                row.person_id
            )),
            Ok(row) => rows.push(row),
            Err(e) => problems.push(format!("line {n}: {e}")),
        }
        if rows.len() > max {
            return Err(vec![format!(
                "more than {max} residents (registry.max_residents); refused"
            )]);
        }
    }
    listed(rows, problems)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRow {
    person_id: String,
    household: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    valid_until: Option<serde_json::Value>,
    #[serde(default)]
    cards: Vec<String>,
}

fn parse_json_line(line: &str) -> Result<Row, String> {
    let r: JsonRow = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let until = match r.valid_until {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s,
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(_) => return Err("valid_until: expected a string or a number".into()),
    };
    row(
        &r.person_id,
        &r.household,
        r.status.as_deref().unwrap_or(""),
        &until,
        &r.cards.join(";"),
    )
}

fn parse_csv_line(header: &[String], line: &str) -> Result<Row, String> {
    let cells: Vec<&str> = line.split(',').map(str::trim).collect();
    if cells.len() != header.len() {
        return Err(format!(
            "{} fields, the header has {}",
            cells.len(),
            header.len()
        ));
    }
    let col = |name: &str| {
        header
            .iter()
            .position(|c| c == name)
            .map_or("", |i| cells[i])
    };
    row(
        col("person_id"),
        col("household"),
        col("status"),
        col("valid_until"),
        col("cards"),
    )
}

fn row(
    person_id: &str,
    household: &str,
    status: &str,
    until: &str,
    cards: &str,
) -> Result<Row, String> {
    let cards: Vec<String> = cards
        .split(';')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    if cards.iter().any(|c| c.len() > 64) || cards.len() > 8 {
        return Err("cards: at most 8, each 1–64 characters".into());
    }
    if person_id.is_empty() || person_id.len() > 64 {
        return Err("person_id: must be 1–64 characters".into());
    }
    if household.is_empty() || household.len() > 64 {
        return Err("household: must be 1–64 characters".into());
    }
    let status = if status.is_empty() {
        ResidentStatus::Active
    } else {
        ResidentStatus::parse(status)
            .ok_or_else(|| format!("status: {status:?} is not active, quarantined or suspended"))?
    };
    let valid_until_ms = if until.is_empty() {
        i64::MAX
    } else {
        parse_time_ms(until).ok_or_else(|| format!("valid_until: cannot read {until:?}"))?
    };
    Ok(Row {
        person_id: person_id.to_string(),
        household: household.to_string(),
        status,
        valid_until_ms,
        cards,
    })
}

/// A visitor pass row (`registry.passes`, CSV with a header naming
/// `pass_id,host_household,credentials,plates,valid_from,valid_until,uses`; credentials (card or
/// QR numbers) and plates (a visitor vehicle pass) `;`-separated, at least one of them).
#[derive(Debug, Clone, PartialEq)]
pub struct PassRow {
    pub pass_id: String,
    pub host_household: String,
    pub credentials: Vec<String>,
    pub valid_from_ms: i64,
    pub valid_until_ms: i64,
    pub uses: u32,
    pub plates: Vec<String>,
}

fn list(cell: &str) -> Vec<String> {
    cell.split(';')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

pub fn parse_passes(text: &str, max: usize) -> Result<Vec<PassRow>, Vec<String>> {
    csv(
        text,
        &["pass_id", "host_household", "valid_until"],
        max,
        |col| {
            let id = col.get("pass_id");
            let host = col.get("host_household");
            if id.is_empty() || id.len() > 64 || host.is_empty() || host.len() > 64 {
                return Err("pass_id and host_household: 1–64 characters".into());
            }
            let credentials = list(col.get("credentials"));
            let plates = list(col.get("plates"));
            if credentials.len() + plates.len() == 0 || credentials.len() > 8 || plates.len() > 8 {
                return Err("credentials, plates: 1–8 card or QR numbers or plates".into());
            }
            let from = col.get("valid_from");
            let valid_from_ms = if from.is_empty() {
                i64::MIN
            } else {
                // A date alone means from the start of that day.
                let t = parse_time_ms(from)
                    .ok_or_else(|| format!("valid_from: cannot read {from:?}"))?;
                if from.len() == 10 && from.as_bytes().get(4) == Some(&b'-') {
                    t - 86_400_000 + 1
                } else {
                    t
                }
            };
            let until = col.get("valid_until");
            let valid_until_ms = parse_time_ms(until)
                .ok_or_else(|| format!("valid_until: cannot read {until:?}"))?;
            let uses = match col.get("uses") {
                "" => 1,
                u => u
                    .parse()
                    .map_err(|_| format!("uses: {u:?} is not a count"))?,
            };
            Ok((
                id.to_string(),
                PassRow {
                    pass_id: id.to_string(),
                    host_household: host.to_string(),
                    credentials,
                    valid_from_ms,
                    valid_until_ms,
                    uses,
                    plates,
                },
            ))
        },
    )
}

/// A plate row (`registry.plates`, CSV `plate,kind,household,valid_until,lockdown_allowed`):
/// `kind` is `resident` (default; needs `household`), `blacklist` or `allowlist` (admitted in
/// lockdown); `lockdown_allowed` (`yes`/`true`/`1`) puts a resident's vehicle on the lockdown
/// allow-list too.
#[derive(Debug, Clone, PartialEq)]
pub struct PlateRow {
    pub plate: String,
    pub kind: PlateKind,
    pub household: String,
    pub valid_until_ms: i64,
    pub lockdown_allowed: bool,
}

pub fn parse_plates(text: &str, max: usize) -> Result<Vec<PlateRow>, Vec<String>> {
    csv(text, &["plate"], max, |col| {
        let plate = col.get("plate");
        if plate.is_empty() || plate.len() > 32 {
            return Err("plate: 1–32 bytes".into());
        }
        let kind = match col.get("kind") {
            "" | "resident" => PlateKind::Resident,
            "blacklist" => PlateKind::Blacklist,
            "allowlist" => PlateKind::AllowList,
            other => {
                return Err(format!(
                    "kind: {other:?} is not resident, blacklist or allowlist"
                ))
            }
        };
        let household = col.get("household");
        if kind == PlateKind::Resident && (household.is_empty() || household.len() > 64) {
            return Err("household: a resident plate needs one (1–64 characters)".into());
        }
        let until = col.get("valid_until");
        let valid_until_ms = if until.is_empty() {
            i64::MAX
        } else {
            parse_time_ms(until).ok_or_else(|| format!("valid_until: cannot read {until:?}"))?
        };
        let lockdown_allowed = match col.get("lockdown_allowed") {
            "" | "no" | "false" | "0" => false,
            "yes" | "true" | "1" => true,
            other => return Err(format!("lockdown_allowed: {other:?} is not yes or no")),
        };
        Ok((
            plate.to_string(),
            PlateRow {
                plate: plate.to_string(),
                kind,
                household: household.to_string(),
                valid_until_ms,
                lockdown_allowed,
            },
        ))
    })
}

/// Households with a status (`registry.households`, CSV `household,status`; status `active` or
/// `quarantined`). Only quarantined ones matter to the core.
pub fn parse_households(text: &str, max: usize) -> Result<Vec<(String, bool)>, Vec<String>> {
    csv(text, &["household", "status"], max, |col| {
        let h = col.get("household");
        if h.is_empty() || h.len() > 64 {
            return Err("household: 1–64 characters".into());
        }
        let quarantined = match col.get("status") {
            "" | "active" => false,
            "quarantined" => true,
            other => return Err(format!("status: {other:?} is not active or quarantined")),
        };
        Ok((h.to_string(), (h.to_string(), quarantined)))
    })
}

/// One CSV line, by column name.
struct Cols<'a> {
    header: &'a [&'a str],
    cells: &'a [&'a str],
}

impl<'a> Cols<'a> {
    /// The cell under `name`; empty when the file has no such column.
    fn get(&self, name: &str) -> &'a str {
        self.header
            .iter()
            .position(|c| *c == name)
            .map_or("", |i| self.cells[i])
    }
}

/// A CSV file with a header; `row` maps one line (by column name) to (unique key, value).
/// Every bad line is listed (up to a limit); more than `max` rows is refused.
fn csv<T>(
    text: &str,
    required: &[&str],
    max: usize,
    row: impl Fn(&Cols<'_>) -> Result<(String, T), String>,
) -> Result<Vec<T>, Vec<String>> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
    let Some((_, header)) = lines.find(|(_, l)| !l.is_empty()) else {
        return Ok(Vec::new());
    };
    let header: Vec<&str> = header.split(',').map(str::trim).collect();
    for need in required {
        if !header.contains(need) {
            return Err(vec![format!("line 1: header lacks the {need} column")]);
        }
    }
    let mut seen = std::collections::HashSet::new();
    let (mut rows, mut problems) = (Vec::new(), Vec::new());
    for (n, line) in lines {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() != header.len() {
            problems.push(format!(
                "line {n}: {} fields, the header has {}",
                cells.len(),
                header.len()
            ));
            continue;
        }
        match row(&Cols {
            header: &header,
            cells: &cells,
        }) {
            Ok((key, _)) if !seen.insert(key.clone()) => {
                problems.push(format!("line {n}: {key:?} listed twice"))
            }
            Ok((_, v)) => rows.push(v),
            Err(e) => problems.push(format!("line {n}: {e}")),
        }
        if rows.len() > max {
            return Err(vec![format!("more than {max} rows; refused")]);
        }
    }
    listed(rows, problems)
}

/// A pass as the list files hold it, as sync carries it.
pub fn pass_entry(p: PassRow) -> v1::PassEntry {
    v1::PassEntry {
        pass_id: p.pass_id,
        host_household: p.host_household,
        credentials: p.credentials,
        plates: p.plates,
        valid_from_ms: if p.valid_from_ms == i64::MIN {
            0
        } else {
            p.valid_from_ms
        },
        valid_until_ms: p.valid_until_ms,
        uses: p.uses,
    }
}

/// A plate as the list files hold it, as sync carries it.
pub fn plate_entry(p: PlateRow) -> v1::PlateEntry {
    v1::PlateEntry {
        plate: p.plate,
        kind: p.kind.as_str().into(),
        household: p.household,
        valid_until_ms: if p.valid_until_ms == i64::MAX {
            0
        } else {
            p.valid_until_ms
        },
        lockdown_allowed: p.lockdown_allowed,
    }
}

/// A resident as the list files hold them, as sync carries them.
pub fn resident_entry(r: Row) -> v1::ResidentEntry {
    v1::ResidentEntry {
        person_id: r.person_id,
        household: r.household,
        status: r.status.as_str().into(),
        valid_until_ms: if r.valid_until_ms == i64::MAX {
            0
        } else {
            r.valid_until_ms
        },
        cards: r.cards,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_columns_may_come_in_any_order() {
        let rows = parse(
            Path::new("x.csv"),
            "household,person_id\nH1,R1\n\n# comment\nH2,R2\n",
            10,
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].household, "H2");
        let err = parse(
            Path::new("x.csv"),
            "person_id,household\nR1,H1\nR1,H1\nR3\n",
            10,
        )
        .unwrap_err();
        assert_eq!(err.len(), 2, "{err:?}");
        let err = parse(
            Path::new("x.csv"),
            "person_id,household\nR1,H1\nR2,H1\nR3,H1\n",
            2,
        )
        .unwrap_err();
        assert!(err[0].contains("more than 2 residents"), "{err:?}");
    }
}
