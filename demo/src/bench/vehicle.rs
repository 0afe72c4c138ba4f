use super::child::{demo_config, intervals, spawn_demo};
use anyhow::{bail, Context};
use gatehouse::mqtt_client;
use gatehouse::tools::sim::site::{DemoConfig, VehicleLane};
use hdrhistogram::Histogram;
use rumqttc::{AsyncClient, QoS};
use std::time::{Duration, Instant};

/// `gatehouse-demo bench-vehicle`: a vehicle lane in a child daemon (plate camera on the device
/// endpoint, a Modbus TCP barrier simulator whose arm comes down on its own), then three barriers on
/// one RTU line (a pty) with one slave dead.
pub struct VehicleBenchOptions {
    pub count: u64,
    pub rate: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct VehicleReport {
    pub reads: u64,
    pub coil_writes: u64,
    /// Reads whose coil write did not come within 2 s (or the period).
    pub missing: u64,
    /// Plate read published → OPEN coil write arriving at the barrier (Modbus TCP, loopback).
    pub plate_to_coil_p50_us: u64,
    pub plate_to_coil_p99_us: u64,
    pub plate_to_coil_max_us: u64,
    /// Intervals between polls of the TCP barrier (configured 100 ms).
    pub poll_interval_p50_us: u64,
    pub poll_interval_p99_us: u64,
    pub poll_interval_max_us: u64,
    /// Intervals between polls of a live slave on the RTU line: all healthy, then with a
    /// neighbour dead (150 ms timeout).
    pub rtu_healthy_p99_us: u64,
    pub rtu_healthy_max_us: u64,
    pub rtu_dead_neighbour_p50_us: u64,
    pub rtu_dead_neighbour_p99_us: u64,
    pub rtu_dead_neighbour_max_us: u64,
}

pub async fn vehicle(o: VehicleBenchOptions) -> anyhow::Result<VehicleReport> {
    use gatehouse::tools::sim::barrier::{serve_rtu, serve_tcp, BarrierSim, Service};
    let base = std::env::temp_dir().join(format!("gatehouse-bench-vehicle-{}", std::process::id()));
    let dir = base.join("tcp");
    std::fs::create_dir_all(&dir)?;
    gatehouse::tools::sim::site::write_residents(&dir.join("residents.csv"), 300)?;
    gatehouse::tools::sim::site::write_plates(&dir.join("plates.csv"), 100)?;
    let barrier = BarrierSim::new(Duration::from_millis(10));
    barrier.set_auto_fall(Some(Duration::from_millis(150)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve_tcp(listener, Service([(1, barrier.clone())].into())));
    let config = DemoConfig {
        plates: true,
        vehicle_lane: Some(VehicleLane {
            barrier: addr,
            auto_close: false,
        }),
        ..demo_config(&dir)?
    };
    let spawned = spawn_demo(&config)?;
    let (camera, mut el) = AsyncClient::new(
        config
            .link("cam-1")
            .options("bench-camera", Duration::from_secs(15)),
        256,
    );
    el.set_network_options(mqtt_client::network_options());
    let poller = tokio::spawn(async move {
        loop {
            if el.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    // Wait until the daemon polls the barrier.
    let start = Instant::now();
    while barrier.take_logs().0.is_empty() {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("the daemon never polled the barrier");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    barrier.take_logs();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?;
    let period = Duration::from_secs_f64(1.0 / o.rate.max(0.1));
    let mut polls = Vec::new();
    let mut missing = 0u64;
    for id in 0..o.count {
        // A resident's plate (every third household has one).
        let body = gatehouse::tools::sim::zhenshi::ivs_result(
            id + 1,
            &format!("粤B1{:04}", (id % 30) * 3),
            95,
            4,
        );
        let sent = Instant::now();
        camera
            .publish(
                "device/cam-1/message/up/ivs_result",
                QoS::AtLeastOnce,
                false,
                body,
            )
            .await?;
        // This read's coil write, waited for before the next read is sent (up to the period
        // or 2 s, whichever is longer), so a late write is never credited to the next read;
        // one that does not come is counted missing.
        let patience = period.max(Duration::from_secs(2));
        let mut answered = None;
        while answered.is_none() && sent.elapsed() < patience {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let (reads, coils) = barrier.take_logs();
            polls.extend(reads);
            answered = coils.into_iter().find(|t| *t >= sent);
        }
        match answered {
            Some(at) => {
                let _ = latency.record((at.duration_since(sent).as_micros() as u64).max(1));
            }
            None => missing += 1,
        }
        if let Some(rest) = period.checked_sub(sent.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
    poller.abort();
    drop(spawned);
    let poll_h = intervals(&polls)?;

    // Three barriers on one RTU line; unit 2 dies halfway.
    let dir = base.join("rtu");
    std::fs::create_dir_all(&dir)?;
    let sims: Vec<BarrierSim> = (0..3)
        .map(|_| BarrierSim::new(Duration::from_secs(2)))
        .collect();
    let pty = gatehouse::tools::sim::serial::Pty::new()?;
    let path = pty.path.clone();
    tokio::spawn(serve_rtu(
        pty,
        Service(
            sims.iter()
                .enumerate()
                .map(|(i, b)| (i as u8 + 1, b.clone()))
                .collect(),
        ),
    ));
    let config = DemoConfig {
        residents: false,
        rtu_barriers: (1..=3).map(|n| (n, path.clone())).collect(),
        ..demo_config(&dir)?
    };
    let spawned = spawn_demo(&config)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    sims[0].take_logs();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let healthy = intervals(&sims[0].take_logs().0)?;
    sims[1].set_dead(true);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let dead = intervals(&sims[0].take_logs().0)?;
    drop(spawned);
    let _ = std::fs::remove_dir_all(&base);
    Ok(VehicleReport {
        reads: o.count,
        coil_writes: latency.len(),
        missing,
        plate_to_coil_p50_us: latency.value_at_quantile(0.5),
        plate_to_coil_p99_us: latency.value_at_quantile(0.99),
        plate_to_coil_max_us: latency.max(),
        poll_interval_p50_us: poll_h.value_at_quantile(0.5),
        poll_interval_p99_us: poll_h.value_at_quantile(0.99),
        poll_interval_max_us: poll_h.max(),
        rtu_healthy_p99_us: healthy.value_at_quantile(0.99),
        rtu_healthy_max_us: healthy.max(),
        rtu_dead_neighbour_p50_us: dead.value_at_quantile(0.5),
        rtu_dead_neighbour_p99_us: dead.value_at_quantile(0.99),
        rtu_dead_neighbour_max_us: dead.max(),
    })
}
