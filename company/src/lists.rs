//! The property company's side of list sync: a snapshot or delta made from the same list files a
//! gateway imports, and a snapshot cut into chunks that fit under the company broker's message
//! size limit.
//!
//! A directory holds any of `residents.csv` (or `.jsonl`), `households.csv`, `plates.csv`,
//! `passes.csv`, in the import formats (README, "Configuration"). For a delta those are the
//! upserts, and `remove.csv` (header `list,id`; list `residents`, `households`, `plates` or
//! `passes`) names what to remove.
use ed25519_dalek::SigningKey;
use gatehouse_contract::lists::{self as residents, pass_entry, plate_entry, resident_entry};
use gatehouse_contract::orders::{sign, MAX_CHUNKS, MAX_TRANSFER_BYTES};
use gatehouse_contract::proto::v1;
use prost::Message;
use std::path::Path;

/// The lists read from one directory.
#[derive(Debug, Default)]
struct Lists {
    residents: Vec<v1::ResidentEntry>,
    households: Vec<v1::HouseholdEntry>,
    plates: Vec<v1::PlateEntry>,
    passes: Vec<v1::PassEntry>,
}

/// Rows read per file at most (the gateway refuses a sync above its own limits anyway).
const MAX_ROWS: usize = 1_000_000;

fn problems(file: &Path, p: Vec<String>) -> String {
    format!("{}: {}", file.display(), p.join("; "))
}

fn read_lists(dir: &Path) -> Result<Lists, String> {
    let mut l = Lists::default();
    let text = |name: &str| -> Result<Option<(std::path::PathBuf, String)>, String> {
        let path = dir.join(name);
        if !path.exists() {
            return Ok(None);
        }
        let t = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Some((path, t)))
    };
    for name in ["residents.csv", "residents.jsonl"] {
        if let Some((path, t)) = text(name)? {
            let rows = residents::parse(&path, &t, MAX_ROWS).map_err(|p| problems(&path, p))?;
            l.residents.extend(rows.into_iter().map(resident_entry));
        }
    }
    if let Some((path, t)) = text("households.csv")? {
        let rows = residents::parse_households(&t, MAX_ROWS).map_err(|p| problems(&path, p))?;
        l.households = rows
            .into_iter()
            .map(|(household, quarantined)| v1::HouseholdEntry {
                household,
                quarantined,
            })
            .collect();
    }
    if let Some((path, t)) = text("plates.csv")? {
        let rows = residents::parse_plates(&t, MAX_ROWS).map_err(|p| problems(&path, p))?;
        l.plates = rows.into_iter().map(plate_entry).collect();
    }
    if let Some((path, t)) = text("passes.csv")? {
        let rows = residents::parse_passes(&t, MAX_ROWS).map_err(|p| problems(&path, p))?;
        l.passes = rows.into_iter().map(pass_entry).collect();
    }
    Ok(l)
}

/// Every list, whole, from `dir`.
pub fn snapshot(dir: &Path, version: u64) -> Result<v1::RegistrySnapshot, String> {
    let l = read_lists(dir)?;
    Ok(v1::RegistrySnapshot {
        version,
        residents: l.residents,
        households: l.households,
        plates: l.plates,
        passes: l.passes,
    })
}

/// Upserts and removals from `dir`, on top of `base`.
pub fn delta(dir: &Path, base: u64, version: u64) -> Result<v1::RegistryDelta, String> {
    let l = read_lists(dir)?;
    let mut d = v1::RegistryDelta {
        base_version: base,
        version,
        upsert_residents: l.residents,
        upsert_households: l.households,
        upsert_plates: l.plates,
        upsert_passes: l.passes,
        ..Default::default()
    };
    let remove = dir.join("remove.csv");
    if remove.exists() {
        let t =
            std::fs::read_to_string(&remove).map_err(|e| format!("{}: {e}", remove.display()))?;
        for (n, line) in t.lines().enumerate().skip(1) {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (list, id) = line
                .split_once(',')
                .map(|(l, i)| (l.trim(), i.trim().to_string()))
                .ok_or_else(|| format!("{} line {}: want list,id", remove.display(), n + 1))?;
            match list {
                "residents" => d.remove_residents.push(id),
                "households" => d.remove_households.push(id),
                "plates" => d.remove_plates.push(id),
                "passes" => d.remove_passes.push(id),
                other => {
                    return Err(format!(
                        "{} line {}: {other:?} is not residents, households, plates or passes",
                        remove.display(),
                        n + 1
                    ))
                }
            }
        }
    }
    Ok(d)
}

/// What a signed order carries besides its payload.
pub struct Envelope<'a> {
    pub id: &'a str,
    pub issued_at_ms: i64,
    pub expires_at_ms: i64,
    pub target: v1::Scope,
    pub key_id: &'a str,
    pub key: &'a SigningKey,
}

impl Envelope<'_> {
    pub fn sign(&self, id: String, payload: v1::command::Payload) -> v1::SignedCommand {
        let c = v1::Command {
            id,
            issued_at_ms: self.issued_at_ms,
            expires_at_ms: self.expires_at_ms,
            target: Some(self.target.clone()),
            payload: Some(payload),
        };
        sign(&c, self.key_id, self.key)
    }
}

/// A snapshot as signed orders: one, or — when its encoding is larger than `chunk_bytes` — one
/// per chunk, ids `{id}-{i}`, the transfer id `id`. Refused here what a gateway would refuse.
pub fn snapshot_orders(
    s: v1::RegistrySnapshot,
    chunk_bytes: usize,
    e: &Envelope<'_>,
) -> Result<Vec<v1::SignedCommand>, String> {
    let bytes = s.encode_to_vec();
    if bytes.len() <= chunk_bytes {
        let payload = v1::command::Payload::RegistrySnapshot(s);
        return Ok(vec![e.sign(e.id.to_string(), payload)]);
    }
    if bytes.len() > MAX_TRANSFER_BYTES {
        return Err(format!(
            "a snapshot of {} bytes; a gateway takes at most {MAX_TRANSFER_BYTES}",
            bytes.len()
        ));
    }
    let chunks: Vec<&[u8]> = bytes.chunks(chunk_bytes.max(1)).collect();
    if chunks.len() > MAX_CHUNKS as usize {
        return Err(format!(
            "{} chunks of {chunk_bytes} bytes; at most {MAX_CHUNKS}: raise --chunk-bytes",
            chunks.len()
        ));
    }
    if e.id.len() + 5 > 128 {
        return Err("the id is too long for chunk ids (at most 123 bytes)".into());
    }
    let count = chunks.len() as u32;
    let sha256 = <sha2::Sha256 as sha2::Digest>::digest(&bytes).to_vec();
    Ok(chunks
        .into_iter()
        .enumerate()
        .map(|(i, data)| {
            e.sign(
                format!("{}-{i}", e.id),
                v1::command::Payload::SnapshotChunk(v1::SnapshotChunk {
                    transfer_id: e.id.to_string(),
                    index: i as u32,
                    count,
                    data: data.to_vec(),
                    total_bytes: bytes.len() as u64,
                    sha256: sha256.clone(),
                }),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_files_become_a_snapshot_and_a_large_one_travels_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let mut csv = String::from("person_id,household,cards\n");
        for i in 0..3000 {
            csv.push_str(&format!("R{i:06},H{:05},10:{i}\n", i / 3));
        }
        std::fs::write(dir.path().join("residents.csv"), csv).unwrap();
        std::fs::write(
            dir.path().join("households.csv"),
            "household,status\nH00001,quarantined\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("remove.csv"), "list,id\nplates,粤B1\n").unwrap();
        let s = snapshot(dir.path(), 7).unwrap();
        assert_eq!((s.residents.len(), s.households.len()), (3000, 1));
        assert_eq!(s.residents[5].cards, ["10:5"]);
        let d = delta(dir.path(), 7, 8).unwrap();
        assert_eq!(d.remove_plates, ["粤B1"]);
        let key = SigningKey::from_bytes(&[1; 32]);
        let e = Envelope {
            id: "snap-7",
            issued_at_ms: 1,
            expires_at_ms: 2,
            target: v1::Scope::default(),
            key_id: "k",
            key: &key,
        };
        let whole = s.encode_to_vec();
        let orders = snapshot_orders(s, 10_000, &e).unwrap();
        assert_eq!(orders.len(), whole.len().div_ceil(10_000));
        let mut joined = Vec::new();
        for (i, o) in orders.iter().enumerate() {
            let c = v1::Command::decode(o.command.as_slice()).unwrap();
            assert_eq!(c.id, format!("snap-7-{i}"));
            let Some(v1::command::Payload::SnapshotChunk(ch)) = c.payload else {
                panic!("a chunk");
            };
            assert_eq!((ch.transfer_id.as_str(), ch.index as usize), ("snap-7", i));
            assert!(ch.data.len() <= 10_000);
            joined.extend(ch.data);
        }
        assert_eq!(joined, whole);
    }
}
