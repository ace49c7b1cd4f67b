//! `atm_swarm`: thousands of concurrent ATMs against a bank server, with injected faults, and an
//! audit of every cent at the end. Exit code 0 when the audit finds nothing, 1 when it finds a
//! violation, 2 for bad usage or a run that could not start.
//!
//! ```sh
//! cargo run --release --example atm_swarm -- --atms 1000 --accounts 200 --duration 10s \
//!     --faults drop-request=0.05,drop-reply=0.05 --server-faults crash-actor=0.01 \
//!     --json-out swarm.json --plot-dir plots
//!
//! # a load ramp against a separately started server: goodput and p99 per number of ATMs
//! cargo run --release --example atm_swarm -- --bench --server 127.0.0.1:7878 \
//!     --operator-token T --accounts 2000 --mix withdraw=1 \
//!     --ramp 64,128,256,512,1024,2048,4096 --step-duration 10s --plot-dir plots
//!
//! # transfers, durable, 64 ATMs: a hot pair, then random pairs of 100 000 accounts
//! cargo run --release --example atm_swarm -- --bench --atms 64 --accounts 2 --mix transfer=1 \
//!     --initial-balance 1000000000000000 --duration 10s
//! cargo run --release --example atm_swarm -- --bench --atms 64 --accounts 100000 --mix transfer=1 \
//!     --initial-balance 1000000000000000 --duration 10s
//!
//! # the load through the ISO 8583 door (the accounts are created over the bank's protocol)
//! cargo run --release --example atm_swarm -- --front-door iso8583 --atms 64 --accounts 100 \
//!     --mix withdraw=4,deposit=3,balance=2,reverse=1 --faults drop-request=0.05,drop-reply=0.05
//!
//! # switch mode: 8 connections, 64 requests in flight on each (512 terminals), spread
//! cargo run --release --example atm_swarm -- --bench --connections 8 --in-flight 64 \
//!     --accounts 100000 --mix withdraw=1 --duration 10s
//!
//! # the same over TLS (mutual TLS with --tls-cert and --tls-key)
//! cargo run --release --example atm_swarm -- --server bank.example:7878 --tls-ca ca.pem \
//!     --operator-token T --duration 10s
//! ```

use actor_bank::client::iso8583::PinBlocks;
use actor_bank::faults::FaultPlan;
use actor_bank::swarm::{self, FrontDoor, Mix, ProgressCallback, Stop, SwarmConfig, SwarmReport};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// The allocator `bank-server` runs with (mimalloc): the in-process server this swarm starts
/// should allocate as the real one does, or an allocation-heavy path (the ISO 8583 door's text
/// messages) measures the C library's malloc instead of the server.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Throws concurrent ATMs and faults at a bank server, then audits every account.
#[derive(Parser, Debug)]
#[command(about)]
struct Arguments {
    /// The server; when omitted, one is started in this process on a temporary data directory.
    #[arg(long, env = "BANK_SERVER")]
    server: Option<String>,
    /// Operator token for creating the swarm's accounts (the in-process server uses it too).
    #[arg(
        long,
        env = "BANK_OPERATOR_TOKEN",
        default_value = "swarm-operator-token-2c8e4a6f1d3b9075",
        hide_env_values = true
    )]
    operator_token: String,
    /// Concurrent ATMs, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    atms: usize,
    /// Accounts to create and use.
    #[arg(long, default_value_t = 100)]
    accounts: usize,
    /// Opening balance of each account (minor units).
    #[arg(long, default_value_t = 1_000_000)]
    initial_balance: u64,
    /// Operation weights: withdraw=W,deposit=W,balance=W,utility=W,transfer=W,hold=W,
    /// complete=W,void=W,reverse=W,statement=W (kinds left out weigh 0). A transfer goes to
    /// another of the accounts, drawn at random (with --accounts 2, a hot pair); complete and void
    /// resolve one of the ATM's own open holds; reverse gives back the ATM's latest withdrawal (one
    /// in four: reverses an id never sent, then sends that id, which must be refused).
    #[arg(long, default_value_t = Mix::default())]
    mix: Mix,
    /// Zipf exponent over accounts (0 = uniform).
    #[arg(long, default_value_t = 0.0)]
    skew: f64,
    /// Operations each ATM does on one card (one verification) before it picks another.
    #[arg(long, default_value_t = 1)]
    ops_per_card: u32,
    /// Send each balance, withdrawal, deposit, transfer, hold and statement as one ForCard
    /// request carrying the card and its PIN, instead of a Verify and then the operation (as an
    /// ATM does when the PIN travels with every transaction).
    #[arg(long)]
    pin_with_each: bool,
    /// How long to send load (e.g. 10s, 2m).
    #[arg(long, value_parser = swarm::parse_duration, conflicts_with = "ops")]
    duration: Option<Duration>,
    /// Stop after this many operations instead.
    #[arg(long)]
    ops: Option<u64>,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Client-side faults: drop-request=P,drop-reply=P (lose the request before sending, lose the
    /// reply after it arrives).
    #[arg(long)]
    faults: Option<FaultPlan>,
    /// Server-side faults for the in-process server: drop-request=P,drop-reply=P,crash-actor=P,delay-ms=N.
    #[arg(long)]
    server_faults: Option<FaultPlan>,
    /// Start the server with this shell command (needs --server, where it listens). With
    /// `{listen}` in the command, the server is started there (--server may name port 0) and
    /// found by the address it reports; restarts reuse that address.
    #[arg(long)]
    server_cmd: Option<String>,
    /// With --server-cmd: SIGKILL the server and restart it on this period (e.g. 2s).
    #[arg(long, value_parser = swarm::parse_duration, requires = "server_cmd")]
    chaos_restart: Option<Duration>,
    /// Measure: no faults of any kind.
    #[arg(long)]
    bench: bool,
    /// A load ramp: ATMs per step, rising (e.g. 64,128,256); each step adds ATMs to those
    /// running. Replaces --atms, --duration and --ops.
    #[arg(long, value_delimiter = ',')]
    ramp: Vec<usize>,
    /// How long each ramp step lasts.
    #[arg(long, value_parser = swarm::parse_duration, default_value = "10s", conflicts_with = "step_ops")]
    step_duration: Duration,
    /// End each ramp step after this many operations instead.
    #[arg(long)]
    step_ops: Option<u64>,
    /// Write the JSON summary here.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Write SVG charts here.
    #[arg(long)]
    plot_dir: Option<PathBuf>,
    /// The shortest time one attempt waits for a reply before retrying; above it the client
    /// library adapts the wait to the measured round trip [default: the library's, 1s].
    #[arg(long, value_parser = swarm::parse_duration)]
    attempt_timeout: Option<Duration>,
    /// The door the load goes through: `bincode` (the bank's protocol) or `iso8583` (each ATM a
    /// terminal on its own connection; withdrawals, deposits, inquiries and, for the mix's
    /// reverse weight, reversals). Accounts are created and audited over the bank's protocol.
    #[arg(long, default_value_t = FrontDoor::Bincode)]
    front_door: FrontDoor,
    /// With --server and --front-door iso8583: the server's ISO 8583 listener (host:port).
    #[arg(long, env = "BANK_ISO8583_ADDRESS")]
    iso8583_address: Option<String>,
    /// With --server and --front-door iso8583: the zone PIN key the server's ISO 8583 door reads
    /// PIN blocks with (32 or 48 hexadecimal digits, owner-only file).
    #[arg(long, conflicts_with = "iso8583_clear_pin_blocks")]
    iso8583_pin_key_file: Option<PathBuf>,
    /// With --server and --front-door iso8583: send clear PIN blocks, for a server started with
    /// --iso8583-clear-pin-blocks (tests only).
    #[arg(long)]
    iso8583_clear_pin_blocks: bool,
    /// Switch mode: this many connections shared by `--in-flight` terminals each, their requests
    /// pipelined; replaces --atms. On the bincode door each connection serves one verified card
    /// at a time, every terminal on it doing --ops-per-card operations on that card before the
    /// next is verified; on the ISO 8583 door each connection is a signed-on line and every
    /// terminal's 0200 carries its own PIN block.
    #[arg(long)]
    connections: Option<usize>,
    /// With --connections: terminals per connection, so requests in flight on it at once.
    #[arg(long, default_value_t = swarm::IN_FLIGHT_DEFAULT, requires = "connections")]
    in_flight: usize,
    /// TLS to --server, as atm's: without --tls-ca the ATMs speak plain TCP.
    #[command(flatten)]
    tls: actor_bank::atm::TlsFlags,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let arguments = Arguments::parse();
    let mut config = match swarm_config(&arguments) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("atm_swarm: {error}");
            return ExitCode::from(2);
        }
    };
    let (bar, progress) = progress_bar(&config);
    config.progress = Some(progress);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("atm_swarm: {error}");
            return ExitCode::from(2);
        }
    };
    let report = match runtime.block_on(swarm::run(config)) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("atm_swarm: {error}");
            return ExitCode::from(2);
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    print_summary(&report, arguments.bench);
    print_ramp(&report);
    if let Err(error) = write_outputs(&arguments, &report) {
        eprintln!("atm_swarm: {error}");
        return ExitCode::from(2);
    }
    if report.violations == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The run the arguments ask for; an error for arguments that cannot make one.
fn swarm_config(arguments: &Arguments) -> Result<SwarmConfig, String> {
    if arguments.atms == 0 || arguments.accounts == 0 {
        return Err("--atms and --accounts must be at least 1".into());
    }
    if arguments.ramp.windows(2).any(|pair| pair[0] >= pair[1]) || arguments.ramp.contains(&0) {
        return Err("--ramp must be rising numbers of ATMs, each at least 1".into());
    }
    let mut config = SwarmConfig::new(arguments.server.clone());
    config.operator_token = arguments.operator_token.clone();
    config.atms = arguments.atms;
    config.accounts = arguments.accounts;
    config.initial_balance = arguments.initial_balance;
    config.mix = arguments.mix;
    config.skew = arguments.skew;
    config.operations_per_card = arguments.ops_per_card.max(1);
    config.pin_with_each = arguments.pin_with_each;
    config.stop = match (arguments.ops, arguments.duration) {
        (Some(ops), _) => Stop::Operations(ops),
        (None, Some(duration)) => Stop::After(duration),
        (None, None) => Stop::After(Duration::from_secs(10)),
    };
    config.seed = arguments.seed;
    config.ramp = arguments.ramp.clone();
    config.ramp_step = match arguments.step_ops {
        Some(ops) => Stop::Operations(ops),
        None => Stop::After(arguments.step_duration),
    };
    if let (false, Stop::After(step)) = (config.ramp.is_empty(), config.ramp_step) {
        // For the progress bar: the whole ramp.
        config.stop = Stop::After(step * config.ramp.len() as u32);
    }
    if let Some(timeout) = arguments.attempt_timeout {
        config.attempt_timeout = timeout;
    }
    if !arguments.bench {
        config.client_faults = arguments.faults.unwrap_or_default();
        config.server_faults = arguments.server_faults;
    } else if arguments.faults.is_some() || arguments.server_faults.is_some() {
        eprintln!(
            "atm_swarm: --bench measures without faults; ignoring --faults and --server-faults"
        );
    }
    config.front_door = arguments.front_door;
    config.iso8583_address = arguments.iso8583_address.clone();
    config.iso8583_pins = match (
        &arguments.iso8583_pin_key_file,
        arguments.iso8583_clear_pin_blocks,
    ) {
        (Some(path), _) => Some(PinBlocks::Key(Box::new(
            actor_bank::pin_block::ZonePinKey::from_file(path)
                .map_err(|error| format!("{}: {error}", path.display()))?,
        ))),
        (None, true) => Some(PinBlocks::Clear),
        (None, false) => None,
    };
    config.server_command = arguments.server_cmd.clone();
    config.chaos_restart = arguments.chaos_restart;
    config.connections = arguments.connections;
    config.in_flight = arguments.in_flight;
    config.tls = arguments
        .tls
        .settings()
        .map_err(|error| error.to_string())?;
    Ok(config)
}

/// The JSON summary and the charts, where the arguments ask for them.
fn write_outputs(arguments: &Arguments, report: &SwarmReport) -> Result<(), String> {
    if let Some(path) = &arguments.json_out {
        write_json(path, report)
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    }
    if let Some(directory) = &arguments.plot_dir {
        write_plots(directory, report)
            .map_err(|error| format!("cannot draw charts in {}: {error}", directory.display()))?;
    }
    Ok(())
}

/// A progress bar on a terminal; otherwise one plain line a second.
fn progress_bar(config: &SwarmConfig) -> (Option<ProgressBar>, ProgressCallback) {
    if !std::io::stderr().is_terminal() {
        let last = parking_lot::Mutex::new((0u64, 0u64));
        let callback = move |acked: u64| {
            let mut last = last.lock();
            last.1 += 1;
            eprintln!(
                "{:>5} s {:>10} ops acked {:>8} ops/s",
                last.1,
                acked,
                acked - last.0
            );
            last.0 = acked;
        };
        return (None, ProgressCallback(Arc::new(callback)));
    }
    let by_operations = matches!(config.stop, Stop::Operations(_));
    let bar = match config.stop {
        Stop::Operations(ops) => ProgressBar::new(ops),
        Stop::After(duration) => ProgressBar::new(duration.as_secs()),
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let handle = bar.clone();
    let callback = move |acked: u64| {
        if by_operations {
            handle.set_position(acked);
        } else {
            handle.inc(1);
        }
        handle.set_message(format!("{acked} ops acked"));
    };
    (Some(bar), ProgressCallback(Arc::new(callback)))
}

fn print_summary(report: &SwarmReport, bench: bool) {
    let latency = &report.latency_us;
    println!(
        "{} ops acked in {:.1} s: {:.0} ops/s; latency µs p50 {} p90 {} p99 {} p99.9 {} max {}",
        report.ops_acked,
        report.duration_secs,
        report.ops_per_sec,
        latency.p50,
        latency.p90,
        latency.p99,
        latency.p999,
        latency.max
    );
    if !bench {
        println!(
            "retries {}, redirects {}, restarts {}, faults {:?}",
            report.retries, report.redirects, report.restarts, report.faults
        );
    }
    print_operations(report);
    println!("statuses {:?}", report.statuses);
    if !report.iso8583.is_empty() {
        println!("iso8583 {:?}", report.iso8583);
    }
    if let Some(switch) = &report.switch {
        println!(
            "switch: {} connections x {} in flight (at most {} seen), {} connections opened, {} rounds, {} verifies",
            switch.connections,
            switch.in_flight,
            switch.in_flight_max_seen,
            switch.connections_opened,
            switch.rounds,
            switch.verifies
        );
    }
    if !report.probes.is_empty() {
        println!("expected refusals {:?}", report.probes);
    }
    if report.violations == 0 {
        println!(
            "audit: {} accounts, every cent accounted for, 0 violations",
            report.accounts.len()
        );
    } else {
        println!("audit: {} VIOLATIONS", report.violations);
        for detail in &report.violation_details {
            println!("  {detail}");
        }
    }
}

/// Each operation kind's count and latency, in the summary line's format, when the mix has more
/// than one kind (or a kind other than withdrawals).
fn print_operations(report: &SwarmReport) {
    let only_withdrawals = report.operations.keys().all(|kind| kind == "withdraw");
    if only_withdrawals {
        return;
    }
    for (kind, counts) in &report.operations {
        let latency = &counts.latency_us;
        println!(
            "  {kind}: {} ops acked ({} approved); latency µs p50 {} p90 {} p99 {} p99.9 {} max {}",
            counts.acked,
            counts.approved,
            latency.p50,
            latency.p90,
            latency.p99,
            latency.p999,
            latency.max
        );
    }
}

/// The ramp's steps, and the goal: past the peak, goodput stays at 80 % of it or more.
fn print_ramp(report: &SwarmReport) {
    if report.ramp.is_empty() {
        return;
    }
    println!("ramp: atms, goodput ops/s, p50 µs, p99 µs, retries");
    for step in &report.ramp {
        println!(
            "  {:>6} {:>10.0} {:>10} {:>10} {:>8}",
            step.atms, step.goodput_per_sec, step.latency_us.p50, step.latency_us.p99, step.retries
        );
    }
    let (peak_index, peak) = report
        .ramp
        .iter()
        .enumerate()
        .map(|(index, step)| (index, step.goodput_per_sec))
        .fold(
            (0, 0.0),
            |best, next| if next.1 > best.1 { next } else { best },
        );
    let floor = report.ramp[peak_index..]
        .iter()
        .map(|step| step.goodput_per_sec)
        .fold(f64::INFINITY, f64::min);
    let ratio = if peak > 0.0 { floor / peak } else { 0.0 };
    println!(
        "ramp: peak {peak:.0} ops/s at {} ATMs; lowest past the peak {floor:.0} ops/s ({:.0} % of the peak; goal 80 %)",
        report.ramp[peak_index].atms,
        ratio * 100.0
    );
}

fn write_json(path: &Path, report: &SwarmReport) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(path, text)
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// Three charts: throughput, latency percentiles, and faults with retries (the lab's server-side
/// and client-side error graphs), restarts marked on each.
fn write_plots(directory: &Path, report: &SwarmReport) -> DrawResult {
    std::fs::create_dir_all(directory)?;
    let seconds = report.timeline.len().max(1) as u64;
    let restarts: Vec<u64> = report
        .timeline
        .iter()
        .filter(|s| s.restarted)
        .map(|s| s.second)
        .collect();
    let series = |pick: fn(&swarm::Second) -> u64| -> Vec<(u64, u64)> {
        report
            .timeline
            .iter()
            .map(|second| (second.second, pick(second)))
            .collect()
    };
    chart(
        &directory.join("throughput.svg"),
        "Throughput (acknowledged operations per second)",
        "ops/s",
        seconds,
        &[("ops acked", series(|s| s.ops_acked), BLUE)],
        &restarts,
        Scale::Linear,
    )?;
    chart(
        &directory.join("latency.svg"),
        "Latency percentiles per second (µs, retries included)",
        "µs",
        seconds,
        &[
            ("p50", series(|s| s.latency_us.p50), GREEN),
            ("p99", series(|s| s.latency_us.p99), BLUE),
            ("p99.9", series(|s| s.latency_us.p999), MAGENTA),
        ],
        &restarts,
        Scale::Logarithmic,
    )?;
    chart(
        &directory.join("faults.svg"),
        "Faults injected and retries per second",
        "count",
        seconds,
        &[
            ("server-side faults", series(|s| s.server_faults), RED),
            ("client-side faults", series(|s| s.client_faults), MAGENTA),
            ("retries", series(|s| s.retries), BLUE),
        ],
        &restarts,
        Scale::Linear,
    )?;
    if !report.ramp.is_empty() {
        ramp_chart(&directory.join("ramp.svg"), &report.ramp)?;
    }
    Ok(())
}

/// Goodput and p99 latency against the number of ATMs (both axes logarithmic in ATMs), one panel
/// above the other.
fn ramp_chart(path: &Path, steps: &[swarm::RampStep]) -> DrawResult {
    let root = SVGBackend::new(path, (900, 720)).into_drawing_area();
    root.fill(&WHITE)?;
    let (upper, lower) = root.split_vertically(360);
    let atms_first = steps.first().map_or(1, |step| step.atms as u64).max(1);
    let atms_last = steps
        .last()
        .map_or(2, |step| step.atms as u64)
        .max(atms_first + 1);
    let atms = (atms_first..atms_last).log_scale();
    let goodput: Vec<(u64, u64)> = steps
        .iter()
        .map(|step| (step.atms as u64, step.goodput_per_sec.round() as u64))
        .collect();
    let p99_ms: Vec<(u64, u64)> = steps
        .iter()
        .map(|step| (step.atms as u64, (step.latency_us.p99 / 1000).max(1)))
        .collect();
    let top = goodput.iter().map(|(_, y)| *y).max().unwrap_or(1).max(10);
    let mut chart = ChartBuilder::on(&upper)
        .caption(
            "Goodput (definite replies per second) by ATMs",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(atms.clone(), 0..top + top / 10 + 1)?;
    chart
        .configure_mesh()
        .x_desc("ATMs")
        .y_desc("ops/s")
        .draw()?;
    chart.draw_series(LineSeries::new(goodput.clone(), BLUE.stroke_width(2)))?;
    chart.draw_series(
        goodput
            .iter()
            .map(|point| Circle::new(*point, 4, BLUE.filled())),
    )?;
    let top = p99_ms.iter().map(|(_, y)| *y).max().unwrap_or(1).max(10);
    let mut chart = ChartBuilder::on(&lower)
        .caption(
            "p99 latency (ms, retries included) by ATMs",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(atms, (1..top * 2).log_scale())?;
    chart.configure_mesh().x_desc("ATMs").y_desc("ms").draw()?;
    chart.draw_series(LineSeries::new(p99_ms.clone(), RED.stroke_width(2)))?;
    chart.draw_series(
        p99_ms
            .iter()
            .map(|point| Circle::new(*point, 4, RED.filled())),
    )?;
    root.present()?;
    Ok(())
}

/// One line of a chart: its label, its points (second, value) and its colour.
type Line<'a> = (&'a str, Vec<(u64, u64)>, RGBColor);

/// How a chart's value axis is scaled.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scale {
    Linear,
    /// For latencies, which span several orders of magnitude.
    Logarithmic,
}

fn chart(
    path: &Path,
    title: &str,
    unit: &str,
    seconds: u64,
    lines: &[Line<'_>],
    restarts: &[u64],
    scale: Scale,
) -> DrawResult {
    let top = lines
        .iter()
        .flat_map(|(_, points, _)| points.iter().map(|(_, value)| *value))
        .max()
        .unwrap_or(1)
        .max(10);
    match scale {
        Scale::Linear => draw(
            path,
            title,
            unit,
            seconds,
            lines,
            restarts,
            0..top + top / 10 + 1,
            0,
        ),
        // A logarithmic axis has no zero: values are drawn from 1.
        Scale::Logarithmic => draw(
            path,
            title,
            unit,
            seconds,
            lines,
            restarts,
            (1..top * 2).log_scale(),
            1,
        ),
    }
}

#[allow(clippy::too_many_arguments)]
fn draw<Y>(
    path: &Path,
    title: &str,
    unit: &str,
    seconds: u64,
    lines: &[Line<'_>],
    restarts: &[u64],
    values: Y,
    floor: u64,
) -> DrawResult
where
    Y: plotters::coord::ranged1d::AsRangedCoord<Value = u64>,
    Y::CoordDescType: plotters::coord::ranged1d::ValueFormatter<u64>,
{
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0..seconds, values)?;
    chart
        .configure_mesh()
        .x_desc("second")
        .y_desc(unit)
        .draw()?;
    let top = lines
        .iter()
        .flat_map(|(_, points, _)| points.iter().map(|(_, value)| *value))
        .max()
        .unwrap_or(1);
    for (name, points, color) in lines {
        let color = *color;
        let points: Vec<(u64, u64)> = points.iter().map(|(x, y)| (*x, (*y).max(floor))).collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    for restart in restarts {
        chart.draw_series(LineSeries::new(
            vec![(*restart, floor), (*restart, top.max(floor))],
            BLACK.mix(0.5),
        ))?;
    }
    if !restarts.is_empty() {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(0, floor), (0, floor)],
                BLACK.mix(0.5),
            )))?
            .label("server restart")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.mix(0.5)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
