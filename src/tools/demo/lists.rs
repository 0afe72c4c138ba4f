//! The demo's lists: residents and their plates, with a few of each status so every reason shows.
use std::io::Write;
use std::path::Path;

/// Resident plates for the demo: 粤B1xxxx for every third household, one blacklisted.
pub fn write_plates(path: &Path, households: u64) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(f, "plate,kind,household,valid_until,lockdown_allowed")?;
    for h in (0..households).step_by(3) {
        writeln!(f, "粤B1{h:04},resident,H{h:05},,")?;
    }
    writeln!(f, "粤B66666,blacklist,,,")?;
    f.flush()
}

/// Writes `R000000` … as residents; every 50th is quarantined and every 70th suspended, so the
/// demo shows those reasons too.
pub fn write_residents(path: &Path, n: u64) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(f, "person_id,household,status,valid_until")?;
    for i in 0..n {
        let status = match i {
            _ if i % 50 == 49 => "quarantined",
            _ if i % 70 == 69 => "suspended",
            _ => "active",
        };
        writeln!(f, "R{i:06},H{:05},{status},", i / 3)?;
    }
    f.flush()
}
