//! Hot-reload soak: Predict load from several clients while versions are swapped on disk.
//!
//! Starts the `tensorserve` binary on a temporary base path (127.0.0.1 only), runs
//! `--clients` concurrent Predict loops on the latest version, and every
//! `--interval-ms` adds version N+1 (written aside, then renamed in) and removes the
//! oldest, `--swaps` times. Reports requests sent and failed, the versions answers
//! came from, and the server's RSS before and after; exits 1 if any request failed,
//! RSS grew by more than 10 %, or the swaps were not seen. The baseline RSS is taken after
//! `--warmup-swaps` (5) uncounted swaps: the first loads grow allocator arenas once (a
//! plateau, not a leak; the per-10-swaps log shows it flat afterwards).
//!
//! `cargo run --release --example soak -- [--bin target/release/tensorserve] [--swaps 100] [--clients 8]`

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tensorserve::proto::tensorflow as tf;
use tensorserve::proto::tensorflow::serving as pb;
use tonic::transport::Channel;

type Client = pb::prediction_service_client::PredictionServiceClient<Channel>;

/// Command-line settings.
struct Args {
    /// The server binary.
    bin: PathBuf,
    /// Number of version swaps.
    swaps: u32,
    /// Concurrent Predict loops.
    clients: usize,
    /// Time between swaps.
    interval: Duration,
    /// Swaps before the RSS baseline is taken, so it includes a warm allocator and one load/unload cycle.
    warmup_swaps: u32,
    /// Control run: the same load and duration, no swaps.
    control: bool,
    /// Extra server flags (`--server-flag --x=y`, repeatable).
    server_flags: Vec<String>,
}

fn parse_args() -> Args {
    let mut args = Args {
        bin: PathBuf::from("target/release/tensorserve"),
        swaps: 100,
        clients: 8,
        interval: Duration::from_secs(1),
        warmup_swaps: 5,
        control: false,
        server_flags: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--control" {
            args.control = true;
            continue;
        }
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--bin" => args.bin = value.into(),
            "--swaps" => args.swaps = value.parse().expect("--swaps N"),
            "--warmup-swaps" => args.warmup_swaps = value.parse().expect("--warmup-swaps N"),
            "--clients" => args.clients = value.parse().expect("--clients N"),
            "--server-flag" => args.server_flags.push(value),
            "--interval-ms" => args.interval = Duration::from_millis(value.parse().expect("--interval-ms N")),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

/// A numeric field of /proc/<pid>/status (`VmRSS` in KiB, `Threads`).
fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resident set size of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    proc_status(pid, "VmRSS")
}

/// Puts `base/<version>/model.onnx` in place atomically: written under a non-version name, then renamed.
fn add_version(base: &Path, version: u64) {
    let staging = base.join(format!(".staging-{version}"));
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("model.onnx"), tensorserve::examples::DIGITS_MLP_ONNX).unwrap();
    std::fs::rename(&staging, base.join(version.to_string())).unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn request() -> pb::PredictRequest {
    let pixels: Vec<f32> = (0..64).map(|i| (i % 17) as f32).collect();
    pb::PredictRequest {
        model_spec: Some(pb::ModelSpec { name: "soak".into(), ..Default::default() }),
        inputs: [(
            "x".to_string(),
            tf::TensorProto {
                dtype: tf::DataType::DtFloat as i32,
                tensor_shape: Some(tf::TensorShapeProto {
                    dim: [1, 64]
                        .iter()
                        .map(|&size| tf::tensor_shape_proto::Dim { size, name: String::new() })
                        .collect(),
                    unknown_rank: false,
                }),
                float_val: pixels,
                ..Default::default()
            },
        )]
        .into(),
        ..Default::default()
    }
}

/// Counters the client loops share.
#[derive(Default)]
struct Tally {
    /// Requests answered OK.
    ok: AtomicU64,
    /// Requests that failed, and the first few errors.
    failed: AtomicU64,
    errors: Mutex<Vec<String>>,
    /// Versions that answered.
    versions: Mutex<BTreeSet<i64>>,
}

async fn client_loop(channel: Channel, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let mut client = Client::new(channel);
    let mut seen = BTreeSet::new();
    while !stop.load(Ordering::Relaxed) {
        match client.predict(request()).await {
            Ok(r) => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
                if let Some(pb::model_spec::VersionChoice::Version(v)) =
                    r.into_inner().model_spec.and_then(|s| s.version_choice)
                {
                    seen.insert(v);
                }
            }
            Err(e) => {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                let mut errors = tally.errors.lock().unwrap();
                if errors.len() < 5 {
                    errors.push(format!("{:?}: {}", e.code(), e.message()));
                }
            }
        }
    }
    tally.versions.lock().unwrap().extend(seen);
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let base = std::env::temp_dir().join(format!("tensorserve-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let mut newest = 1u64;
    add_version(&base, newest);

    let port = free_port();
    let server = Server(
        Command::new(&args.bin)
            .args([
                format!("--port={port}"),
                "--grpc_bind_address=127.0.0.1".into(),
                "--model_name=soak".into(),
                format!("--model_base_path={}", base.display()),
                "--file_system_poll_wait_seconds=1".into(),
            ])
            .args(&args.server_flags)
            .env("RUST_LOG", std::env::var("SOAK_SERVER_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", args.bin.display())),
    );
    let pid = server.0.id();
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let channel = loop {
        if let Ok(ch) = Channel::from_shared(endpoint.clone()).unwrap().connect().await {
            if Client::new(ch.clone()).predict(request()).await.is_ok() {
                break ch;
            }
        }
        assert!(Instant::now() < deadline, "server did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(channel);

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut loops = Vec::new();
    for _ in 0..args.clients {
        // One connection per client, as separate services would have.
        let ch = Channel::from_shared(endpoint.clone()).unwrap().connect().await.unwrap();
        loops.push(tokio::spawn(client_loop(ch, stop.clone(), tally.clone())));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_start = rss_kib(pid);
    // One swap: add version N+1 (staged, renamed in) and remove the oldest.
    let swap = |newest: &mut u64| {
        *newest += 1;
        add_version(&base, *newest);
        std::fs::remove_dir_all(base.join((*newest - 1).to_string())).unwrap();
    };
    // Warm-up swaps settle allocator arenas and buffers; the baseline is taken after them.
    for _ in 0..args.warmup_swaps {
        tokio::time::sleep(args.interval).await;
        if !args.control {
            swap(&mut newest);
        }
    }
    tokio::time::sleep(args.interval).await;
    let rss_before = rss_kib(pid);
    let started = Instant::now();
    for i in 0..args.swaps {
        tokio::time::sleep(args.interval).await;
        if !args.control {
            swap(&mut newest);
        }
        if (i + 1) % 10 == 0 {
            eprintln!(
                "{} swaps, {} ok, {} failed, rss {} KiB, {} threads",
                i + 1,
                tally.ok.load(Ordering::Relaxed),
                tally.failed.load(Ordering::Relaxed),
                rss_kib(pid),
                proc_status(pid, "Threads")
            );
        }
    }
    // Let the last swap land, then stop the load.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    let rss_after = rss_kib(pid);
    let elapsed = started.elapsed();
    drop(server);
    let _ = std::fs::remove_dir_all(&base);

    let ok = tally.ok.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    let versions = tally.versions.lock().unwrap().clone();
    let growth = (rss_after as f64 / rss_before.max(1) as f64 - 1.0) * 100.0;
    println!("swaps:           {}", args.swaps);
    println!("clients:         {}", args.clients);
    println!("requests sent:   {}", ok + failed);
    println!("requests failed: {failed}");
    println!(
        "throughput:      {:.0} req/s over {:.1} s",
        (ok + failed) as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "versions served: {} (from {} to {})",
        versions.len(),
        versions.first().unwrap_or(&0),
        versions.last().unwrap_or(&0)
    );
    println!(
        "server RSS:      {rss_before} KiB before the {} swaps, {rss_after} KiB after ({growth:+.1} %); {rss_start} KiB under load before {} warm-up swaps",
        args.swaps, args.warmup_swaps
    );
    for e in tally.errors.lock().unwrap().iter() {
        println!("error: {e}");
    }
    let mut verdict = Vec::new();
    if failed > 0 {
        verdict.push("requests failed");
    }
    if growth > 10.0 {
        verdict.push("RSS grew by more than 10 %");
    }
    // Most swaps should have served at least briefly (a 1 s poll can skip one now and then).
    if !args.control && (versions.len() as u32) < args.swaps / 2 {
        verdict.push("too few versions answered: swaps were not picked up");
    }
    if verdict.is_empty() {
        println!("PASS");
    } else {
        println!("FAIL: {}", verdict.join(", "));
        std::process::exit(1);
    }
}
