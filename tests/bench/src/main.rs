//! guestreset-bench: throughput against the floor of the work, memory, restart cost, the
//! manual way, the write limiter's fidelity, no head-of-line blocking behind it (B6), and the
//! follow-through's read budget (B7), on a
//! real kube-apiserver and the Graph simulator. Prints one Markdown table; `scripts/bench.sh` builds and runs it.

mod apiserver;
mod benches;
mod floor;
mod machine;
mod operator;
mod probe;
mod status;
mod table;
mod world;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use benches::Ctx;
use machine::{Machine, Processes};
use table::Table;

const USAGE: &str = "usage: guestreset-bench --operator PATH [--out DIR] [--quick] [--skip-b5] [--sweep] [--only B1,B2,B3,B4,B5,B6,B7,B8]

  --operator PATH  the guestreset binary to measure (a release build)
  --out DIR        logs, simulator state and table.md (default: $TMPDIR/guestreset-bench)
  --quick          B1 with 200 resources, B2/B3/B7 with 2,000, B8 with 1,000 guests (for development)
  --skip-b5        leave out B5 (it takes about 5 minutes)
  --rounds N       B1 rounds, operator and floor alternating; the best of each counts
                   (default 2, 1 with --quick)
  --sweep          B1 also at --concurrency 4 and 64, operator and floor (always in a full run)
  --only LIST      run only these benches (B2 and B3 run together)";

struct Options {
    operator: PathBuf,
    out: PathBuf,
    quick: bool,
    skip_b5: bool,
    sweep: bool,
    rounds: Option<usize>,
    only: Option<Vec<String>>,
}

impl Options {
    fn parse() -> Result<Options> {
        let mut args = std::env::args().skip(1);
        let mut operator = None;
        let mut out = std::env::temp_dir().join("guestreset-bench");
        let (mut quick, mut skip_b5, mut sweep, mut only) = (false, false, false, None);
        let mut rounds = None;
        while let Some(arg) = args.next() {
            let mut value =
                |name: &str| args.next().with_context(|| format!("{name} needs a value"));
            match arg.as_str() {
                "--operator" => operator = Some(PathBuf::from(value("--operator")?)),
                "--out" => out = PathBuf::from(value("--out")?),
                "--quick" => quick = true,
                "--skip-b5" => skip_b5 = true,
                "--sweep" => sweep = true,
                "--rounds" => {
                    let n: usize = value("--rounds")?
                        .parse()
                        .context("--rounds takes a number")?;
                    rounds = Some(n.clamp(1, 10));
                }
                "--only" => {
                    only = Some(
                        value("--only")?
                            .split(',')
                            .map(|s| s.trim().to_ascii_uppercase())
                            .collect(),
                    )
                }
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?}\n{USAGE}"),
            }
        }
        Ok(Options {
            operator: operator.with_context(|| format!("--operator is required\n{USAGE}"))?,
            out,
            quick,
            skip_b5,
            sweep,
            rounds,
            only,
        })
    }

    fn runs(&self, bench: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|b| b == bench))
    }
}

fn kubernetes_version(cluster: &world::Cluster) -> String {
    cluster
        .cp
        .kubectl()
        .args(["version", "-o", "json"])
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| v["serverVersion"]["gitVersion"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

async fn run(options: Options) -> Result<bool> {
    let started = Instant::now();
    let _ = std::fs::remove_dir_all(&options.out);
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("creating {}", options.out.display()))?;
    let binary = operator::Binary::inspect(&options.operator)?;
    eprintln!(
        "guestreset-bench: measuring {} ({}); logs in {}",
        binary.path.display(),
        if binary.has_metrics {
            "with /metrics and /readyz"
        } else {
            "without --metrics-addr: readiness from the watch-synced log line"
        },
        options.out.display()
    );
    eprintln!("starting the control plane");
    let cluster = world::Cluster::start().await?;
    let processes = Processes::of_control_plane(cluster.cp.dir());
    let version = kubernetes_version(&cluster);
    let ctx = Ctx {
        cluster,
        binary,
        out: options.out.clone(),
        processes,
    };
    let (b1_n, b2_n, rounds) = if options.quick {
        (200, 2_000, 1)
    } else {
        (1_000, 10_000, 2)
    };
    let rounds = options.rounds.unwrap_or(rounds);

    let mut table = Table::default();
    if options.runs("B1") {
        if let Err(err) = benches::b1(&ctx, b1_n, rounds, &mut table).await {
            table.fail("B1 burst", format!("{err:#}"));
        }
        if (options.sweep || !options.quick)
            && let Err(err) = benches::b1_sweep(&ctx, b1_n, &[4, 64], &mut table).await
        {
            table.fail("B1 sweep", format!("{err:#}"));
        }
    }
    if (options.runs("B2") || options.runs("B3"))
        && let Err(err) = benches::b2_b3(&ctx, b2_n, &mut table).await
    {
        table.fail("B2/B3", format!("{err:#}"));
    }
    if options.runs("B4")
        && let Err(err) = benches::b4(&ctx, 100, &mut table).await
    {
        table.fail("B4 by hand", format!("{err:#}"));
    }
    if options.runs("B5") && !options.skip_b5 {
        if let Err(err) = benches::b5(&ctx, 30, &mut table).await {
            table.fail("B5 limiter", format!("{err:#}"));
        }
    } else if options.runs("B5") {
        table.info("B5 limiter", "skipped (--skip-b5)", "");
    }
    if options.runs("B6") {
        let window = std::time::Duration::from_secs(if options.quick { 40 } else { 60 });
        let n = if options.quick { 200 } else { 1_000 };
        if let Err(err) = benches::b6(&ctx, n, window, &mut table).await {
            table.fail("B6 head of line", format!("{err:#}"));
        }
    }
    if options.runs("B7") {
        let window = std::time::Duration::from_secs(if options.quick { 60 } else { 120 });
        if let Err(err) = benches::b7(&ctx, b2_n, window, &mut table).await {
            table.fail("B7 follow-through", format!("{err:#}"));
        }
    }

    if options.runs("B8") {
        let (n, window) = if options.quick {
            (1_000, 60)
        } else {
            (5_000, 120)
        };
        if let Err(err) =
            benches::b8(&ctx, n, std::time::Duration::from_secs(window), &mut table).await
        {
            table.fail("B8 migration", format!("{err:#}"));
        }
    }

    let machine = Machine::describe();
    let header = vec![
        format!(
            "guestreset benchmark — {} run, {} resources in B1, {} in B2/B3/B7; took {:.0} s",
            if options.quick { "quick" } else { "full" },
            b1_n,
            b2_n,
            started.elapsed().as_secs_f64()
        ),
        String::new(),
        format!(
            "Machine: {} cores (nproc {}), {}, {:.1} GiB memory, Linux {}. Kubernetes {version} (kube-apiserver + etcd without fsync, on the same machine), Graph simulator in the benchmark process, all on loopback.",
            machine.cores, machine.nproc, machine.cpu_model, machine.memory_gib, machine.kernel
        ),
    ];
    let text = table.render(&header);
    std::fs::write(options.out.join("table.md"), &text)?;
    println!("{text}");
    Ok(!table.failed())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("store-probe") {
        let namespace = args.get(2).cloned().unwrap_or_default();
        let strip = args.iter().any(|a| a == "--strip-managed-fields");
        let runtime = tokio::runtime::Runtime::new().expect("a Tokio runtime");
        return match runtime.block_on(probe::run(&namespace, strip)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("store-probe: {err:#}");
                ExitCode::FAILURE
            }
        };
    }
    let options = match Options::parse() {
        Ok(options) => options,
        Err(err) => {
            eprintln!("guestreset-bench: {err:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    match runtime.block_on(run(options)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("guestreset-bench: FAILED checks, see the table");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("guestreset-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}
