//! MLLP benchmark (`scripts/bench-mllp`): HL7 ORM^O01 messages accepted and ACKed end to
//! end into Postgres, over `BENCH_CONNECTIONS` (4) connections, each sending its next
//! message only after the ACK of the previous one (as interface engines do). Prints
//! messages/s and ACK latency percentiles.

use priorfetch_config::MllpConfig;
use priorfetch_listener::Intake;
use priorfetch_listener::mllp::{MllpListener, frame};
use priorfetch_store::Store;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn orm(connection: usize, n: usize) -> String {
    [
        format!("MSH|^~\\&|BENCH{connection}|HOSP|PRIORFETCH|RAD|20261205083000||ORM^O01^ORM_O01|B{n}|P|2.5.1"),
        format!("PID|1||MRN{}^^^HOSP^MR||DOE^JANE||19700101|F", n % 10_007),
        format!("ORC|NW|ORD{n}|ACC{connection}-{n}"),
        "TQ1|1||||||20261206093000+0100".into(),
        format!("OBR|1|ORD{n}|ACC{connection}-{n}|CTCHEST^CT chest{}CT", "|".repeat(20)),
    ]
    .join("\r")
}

/// Sends `count` messages one after the other; returns each ACK's latency.
async fn sender(addr: std::net::SocketAddr, connection: usize, count: usize) -> anyhow::Result<Vec<Duration>> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut latencies = Vec::with_capacity(count);
    let mut buffer = vec![0u8; 4096];
    for n in 0..count {
        let started = Instant::now();
        frame::write_frame(&mut stream, orm(connection, n).as_bytes()).await?;
        let mut filled = 0;
        while !buffer[..filled].ends_with(&[frame::END, frame::CR]) {
            let read = stream.read(&mut buffer[filled..]).await?;
            anyhow::ensure!(read > 0, "listener closed the connection");
            filled += read;
        }
        let ack = String::from_utf8_lossy(&buffer[..filled]);
        anyhow::ensure!(ack.contains("MSA|AA|"), "not accepted: {ack}");
        latencies.push(started.elapsed());
    }
    stream.shutdown().await?;
    Ok(latencies)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let total: usize = priorfetch_testkit::bench::env_or("BENCH_MESSAGES", 20_000);
    let connections: usize = priorfetch_testkit::bench::env_or("BENCH_CONNECTIONS", 4);
    let db = priorfetch_testkit::db::TestDb::postgres().await;
    let store = Store::connect(&db.url, "", 8).await?;
    store.migrate().await?;
    let options =
        priorfetch_events::DecodeOptions { source: "mllp".into(), hl7: Default::default(), sender_in_key: true };
    let config = MllpConfig { listen: "127.0.0.1:0".into(), ..MllpConfig::default() };
    let listener = MllpListener::bind(&config, Intake::new(store.clone(), options)).await?;
    let addr = listener.local_addr()?;
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(listener.run(shutdown));

    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for c in 0..connections {
        senders.spawn(sender(addr, c, total / connections));
    }
    let mut latencies = Vec::new();
    while let Some(done) = senders.join_next().await {
        latencies.extend(done??);
    }
    let elapsed = started.elapsed();
    let stored = store.count_exams().await?;
    anyhow::ensure!(stored as usize == latencies.len(), "{stored} exams for {} ACKs", latencies.len());
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "mllp: {} messages over {connections} connections in {:.2} s = {:.0} msg/s ACKed after commit \
         (ACK latency p50 {:.2} ms, p99 {:.2} ms)",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3
    );
    Ok(())
}
