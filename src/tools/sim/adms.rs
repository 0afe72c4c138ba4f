//! A simulated ZKTeco terminal speaking ADMS ("iclock") to gatehouse's HTTP listener: the
//! handshake, attendance records uploaded as they happen (or a stored batch after an outage, or
//! the same batch twice), a poll for commands every second, and each command's result.
use super::http_push::Pusher;

/// One terminal, by its serial number, on gatehouse's listener at `addr`.
pub struct Terminal {
    pusher: Pusher,
    pub sn: String,
}

/// An attendance record line: PIN, its local time (UTC+8) at `ms`, check-in, face verify.
pub fn attlog(pin: &str, ms: i64) -> String {
    let local = crate::timefmt::rfc3339(ms + 8 * 3_600_000);
    format!("{pin}\t{} {}\t0\t15\t0\t0\t0", &local[..10], &local[11..19])
}

impl Terminal {
    pub fn new(addr: &str, sn: &str) -> Terminal {
        Terminal {
            pusher: Pusher::new(addr),
            sn: sn.to_string(),
        }
    }

    /// `GET /iclock/cdata?SN=…&options=all`: the options gatehouse gives it.
    pub async fn handshake(&mut self) -> Result<(u16, String), String> {
        let path = format!(
            "/iclock/cdata?SN={}&options=all&pushver=2.4.1&language=83",
            self.sn
        );
        text(self.pusher.get(&path).await)
    }

    /// `POST /iclock/cdata?SN=…&table=ATTLOG`: records, one a line.
    pub async fn upload(&mut self, lines: &[String]) -> Result<(u16, String), String> {
        let path = format!("/iclock/cdata?SN={}&table=ATTLOG&Stamp=9999", self.sn);
        let body = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
        let answer = self
            .pusher
            .post(&path, "text/plain", body.into_bytes())
            .await;
        text(answer)
    }

    /// `GET /iclock/getrequest?SN=…`: the commands waiting for it, `(id, command)`.
    pub async fn poll(&mut self) -> Result<Vec<(u64, String)>, String> {
        let path = format!("/iclock/getrequest?SN={}", self.sn);
        let (_, text) = text(self.pusher.get(&path).await)?;
        Ok(text
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("C:")?;
                let (id, cmd) = rest.split_once(':')?;
                Some((id.parse().ok()?, cmd.to_string()))
            })
            .collect())
    }

    /// `POST /iclock/devicecmd?SN=…`: a command's result (0: done).
    pub async fn result(&mut self, id: u64, code: i64, cmd: &str) -> Result<(u16, String), String> {
        let path = format!("/iclock/devicecmd?SN={}", self.sn);
        let body = format!(
            "ID={id}&Return={code}&CMD={}",
            cmd.split(' ').next().unwrap_or("")
        );
        let answer = self
            .pusher
            .post(&path, "text/plain", body.into_bytes())
            .await;
        text(answer)
    }
}

fn text(
    answer: Result<(hyper::StatusCode, bytes::Bytes), String>,
) -> Result<(u16, String), String> {
    answer.map(|(s, b)| (s.as_u16(), String::from_utf8_lossy(&b).into_owned()))
}

/// `gatehouse simulate zkteco-adms`: handshake, then a record at `rate` (residents R000000…), a
/// poll every second, each command printed and answered done; `stored` records dated minutes
/// back first, as after an outage.
pub async fn run(
    addr: &str,
    sn: &str,
    rate: f64,
    residents: u64,
    stored: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let mut t = Terminal::new(addr, sn);
    let (status, options) = t.handshake().await?;
    println!("handshake: {status}\n{options}");
    let now = crate::now_ms();
    let old: Vec<String> = (0..stored)
        .map(|i| {
            attlog(
                &format!("R{:06}", i % residents.max(1)),
                now - 600_000 + i as i64 * 1000,
            )
        })
        .collect();
    if !old.is_empty() {
        println!("stored batch: {:?}", t.upload(&old).await?);
    }
    let mut rng = super::Rng::new(now as u64);
    let mut records =
        tokio::time::interval(std::time::Duration::from_secs_f64(1.0 / rate.max(0.01)));
    let mut polls = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.changed() => return Ok(()),
            _ = records.tick() => {
                let pin = format!("R{:06}", rng.next_u64() % (residents + residents / 10).max(1));
                let line = attlog(&pin, crate::now_ms());
                println!("record {pin}: {:?}", t.upload(&[line]).await?);
            }
            _ = polls.tick() => {
                for (id, cmd) in t.poll().await? {
                    println!("command {id}: {cmd}");
                    t.result(id, 0, &cmd).await?;
                }
            }
        }
    }
}
