//! Throughput figures; run with `cargo test -p graph-sim --test bench -- --ignored --nocapture`.

mod common;

use common::*;
use reqwest::StatusCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn graph_round_trips() {
    let sim = start("bench").await;
    let graph = Arc::new(Graph::new(&sim).await);
    let path = format!("/users/{ALICE}?$select={SELECT}");

    let n = 1000;
    let started = Instant::now();
    for _ in 0..n {
        assert_eq!(graph.get(&path).await.status, StatusCode::OK);
    }
    let sequential = started.elapsed();
    println!(
        "sequential GET /users/{{id}}: {n} in {sequential:?} ({:.0}/s, {:?} each)",
        n as f64 / sequential.as_secs_f64(),
        sequential / n
    );

    let latency = Duration::from_millis(20);
    sim.admin().set_latency(latency).await.unwrap();
    let concurrent = 50;
    let rounds = 10;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrent {
        let graph = graph.clone();
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..rounds {
                let t = Instant::now();
                assert_eq!(graph.get(&path).await.status, StatusCode::OK);
                assert!(t.elapsed() >= latency);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let total = concurrent * rounds;
    println!(
        "{concurrent} concurrent callers, 20 ms latency: {total} GETs in {elapsed:?} ({:.0}/s)",
        total as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(
        sim.admin().journal().await.unwrap().len(),
        1 + n as usize + total as usize
    );
}
