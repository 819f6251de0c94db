//! `styleforge bench`: GPU forward-pass timings with CUDA events, random weights of the right shapes.
use std::io::Write;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use cust::event::{Event, EventFlags};
use models::{StyleVit, StyleVitConfig, TransformerNet};
use rand::{Rng, SeedableRng};

use styleforge::nets::transformer_net::{LayerCost, OpKind};
use styleforge::{DeviceTensor, Gpu, Layout};

use super::model;
use super::precision::{self, GpuTnet, GpuVit, Precision};
use super::{gib, open_gpu, Failure, Outcome};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchModel {
    #[value(name = "transformer_net", alias = "tnet")]
    TransformerNet,
    #[value(name = "vit-nano")]
    VitNano,
    #[value(name = "vit-small")]
    VitSmall,
    #[value(name = "vit-base")]
    VitBase,
    #[value(name = "vit-large")]
    VitLarge,
    All,
}

impl BenchModel {
    fn vit_variant(self) -> Option<&'static str> {
        match self {
            BenchModel::VitNano => Some("nano"),
            BenchModel::VitSmall => Some("small"),
            BenchModel::VitBase => Some("base"),
            BenchModel::VitLarge => Some("large"),
            _ => None,
        }
    }
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Network(s) to time (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    pub model: Vec<BenchModel>,
    /// Square content sizes in pixels (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "256,512,1024")]
    pub sizes: Vec<usize>,
    /// Batch sizes (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub batch: Vec<usize>,
    /// Precisions to time (comma-separated), one row each: fp16 is the tensor-core path,
    /// fp32 the fp32 kernels (both nets)
    #[arg(long, value_enum, value_delimiter = ',', default_value = "fp16,fp32")]
    pub precision: Vec<Precision>,
    /// StyleViT patch size (16 gives 4096 tokens at 1024x1024).
    #[arg(long, default_value_t = 32)]
    pub patch: usize,
    /// StyleViT style image size (square).
    #[arg(long, default_value_t = 256)]
    pub style_size: usize,
    /// StyleViT: one style image per content image (as `shared/bench/torch_baseline.py` times PyTorch),
    /// or with `--one-style` a single style image for the whole batch.
    #[arg(long)]
    pub one_style: bool,
    /// Untimed runs before timing.
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Timed runs (the median and the minimum are reported).
    #[arg(long, default_value_t = 30)]
    pub iters: usize,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Time direct kernel launches instead of replaying a captured CUDA graph (the default).
    #[arg(long)]
    pub no_graph: bool,
    /// Also time each layer group (TransformerNet: conv+norm pairs and residual blocks, in each --precision;
    /// StyleViT: encoders, AdaIN, decoder, tail) with CUDA events between groups, direct launches:
    /// median ms, achieved TFLOP/s and GB/s (estimated counts), share of the summed time.
    #[arg(long)]
    pub layers: bool,
    /// Also time `wgmma_peak`: back-to-back tensor-core MMAs from shared memory that is never refilled,
    /// per MMA tile shape with one and two warpgroups per SM: the ceiling the GEMM and conv mainloops
    /// can reach with that issue pattern (TFLOP/s).
    #[arg(long)]
    pub tensor_peak: bool,
}

/// One timed configuration.
struct Row {
    model: &'static str,
    variant: &'static str,
    precision: Precision,
    size: usize,
    batch: usize,
    tokens: Option<usize>,
    median_ms: f64,
    min_ms: f64,
    /// Whether the timed passes replayed a CUDA graph.
    graph: bool,
}

fn header() -> String {
    format!(
        "{:<16} {:<8} {:<9} {:>6} {:>6} {:>7} {:>11} {:>10} {:>10}",
        "model",
        "variant",
        "precision",
        "size",
        "batch",
        "tokens",
        "median ms",
        "min ms",
        "images/s"
    )
}

impl Row {
    fn images_per_s(&self) -> f64 {
        self.batch as f64 * 1000.0 / self.median_ms
    }
    fn line(&self) -> String {
        format!(
            "{:<16} {:<8} {:<9} {:>6} {:>6} {:>7} {:>11.3} {:>10.3} {:>10.1}",
            self.model,
            self.variant,
            self.precision.name(),
            self.size,
            self.batch,
            self.tokens.map_or("-".to_string(), |t| t.to_string()),
            self.median_ms,
            self.min_ms,
            self.images_per_s()
        )
    }
    fn json(&self) -> String {
        serde_json::json!({
            "model": self.model,
            "variant": if self.variant == "-" { None } else { Some(self.variant) },
            "precision": self.precision.name(),
            "size": self.size,
            "batch": self.batch,
            "tokens": self.tokens,
            "median_ms": self.median_ms,
            "min_ms": self.min_ms,
            "images_per_s": self.images_per_s(),
            "graph": self.graph,
        })
        .to_string()
    }
}

/// Median and minimum of `times` (non-empty).
pub fn median_min(times: &mut [f32]) -> (f64, f64) {
    times.sort_by(f32::total_cmp);
    let n = times.len();
    let median = if n % 2 == 1 {
        times[n / 2] as f64
    } else {
        (times[n / 2 - 1] as f64 + times[n / 2] as f64) / 2.0
    };
    (median, times[0] as f64)
}

/// Runs `step` `warmup` times, then `iters` times each between two events on the GPU's stream.
fn time_on_stream(
    gpu: &Gpu,
    warmup: usize,
    iters: usize,
    mut step: impl FnMut() -> Result<(), String>,
) -> Result<(f64, f64), String> {
    let cuda = |what: &str, e: cust::error::CudaError| format!("{what}: {e}");
    for _ in 0..warmup {
        step()?;
    }
    gpu.synchronize().map_err(|e| e.to_string())?;
    let start = Event::new(EventFlags::DEFAULT).map_err(|e| cuda("creating an event", e))?;
    let stop = Event::new(EventFlags::DEFAULT).map_err(|e| cuda("creating an event", e))?;
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        start
            .record(gpu.stream())
            .map_err(|e| cuda("recording an event", e))?;
        step()?;
        stop.record(gpu.stream())
            .map_err(|e| cuda("recording an event", e))?;
        stop.synchronize().map_err(|e| {
            cuda(
                "waiting for the forward pass (a kernel may have faulted)",
                e,
            )
        })?;
        times.push(
            stop.elapsed_time_f32(&start)
                .map_err(|e| cuda("reading the event timer", e))?,
        );
    }
    Ok(median_min(&mut times))
}

fn random_device(rng: &mut impl Rng, shape: &[usize], hi: f32) -> Result<DeviceTensor, String> {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| rng.gen_range(0.0..hi)).collect();
    DeviceTensor::from_f32(shape, &data, Layout::Nchw).map_err(|e| e.to_string())
}

fn ensure_fits(gpu: &Gpu, need: usize) -> Result<(), String> {
    let free = gpu.memory_info().map_err(|e| e.to_string())?.0;
    if need > free {
        return Err(format!(
            "skipped: needs about {} of GPU memory, {} free",
            gib(need),
            gib(free)
        ));
    }
    Ok(())
}

struct Bench<'a> {
    gpu: &'a Gpu,
    args: &'a BenchArgs,
    rng: rand::rngs::StdRng,
    failures: usize,
}

/// Whether a net's timed passes replayed a graph; warns (once per configuration) when capture failed.
fn graph_used(asked: bool, error: Option<&str>, what: &str) -> bool {
    if let (true, Some(e)) = (asked, error) {
        eprintln!("warning: {what}: CUDA graph capture failed, timed direct launches instead: {e}");
    }
    asked && error.is_none()
}

/// The callback a marked forward pass calls after each layer group.
type Mark<'a> = &'a mut dyn FnMut(&'static str) -> styleforge::Result<()>;

/// One layer group's timing (summed over the `count` marks of the same name).
struct LayerRow {
    name: &'static str,
    kind: OpKind,
    count: usize,
    ms: f64,
    tflops: f64,
    gbps: f64,
    share: f64,
}

impl LayerRow {
    fn line(&self) -> String {
        format!(
            "  {:<20} {:>3} {:>10.4} {:>9.2} {:>9.1} {:>7.1}%",
            self.name,
            self.count,
            self.ms,
            self.tflops,
            self.gbps,
            100.0 * self.share
        )
    }
    fn json(&self, model: &str, precision: Precision, size: usize, batch: usize) -> String {
        self.json_value(model, precision, size, batch, Some(self.name)).to_string()
    }
    /// The JSON object; `layer` null for a per-kind total.
    fn json_value(&self, model: &str, precision: Precision, size: usize, batch: usize, layer: Option<&str>) -> serde_json::Value {
        serde_json::json!({
            "model": model, "precision": precision.name(), "size": size, "batch": batch, "layer": layer, "kind": self.kind.name(), "count": self.count, "median_ms": self.ms,
            "tflops": self.tflops, "gbps": self.gbps, "share": self.share,
        })
    }
}

/// Combines per-mark median times (ms) with the cost estimates: marks of the same name (one op of every
/// transformer block, say) are summed into one row, in order of first appearance; then rates and shares
/// of the summed time.
fn layer_rows(costs: &[LayerCost], ms: &[f64]) -> Vec<LayerRow> {
    summed(costs, ms, |c| c.name)
}

/// Sums marks with the same `key(cost)` (costs, counts, times) into one row each, in order of first
/// appearance; the row takes the first mark's name and kind.
fn summed<K: PartialEq>(costs: &[LayerCost], ms: &[f64], key: impl Fn(&LayerCost) -> K) -> Vec<LayerRow> {
    let mut groups: Vec<(K, LayerCost, usize, f64)> = Vec::new();
    for (c, &t) in costs.iter().zip(ms) {
        let k = key(c);
        match groups.iter_mut().find(|g| g.0 == k) {
            Some(g) => {
                g.1.flops += c.flops;
                g.1.bytes += c.bytes;
                g.2 += 1;
                g.3 += t;
            }
            None => groups.push((k, c.clone(), 1, t)),
        }
    }
    let total: f64 = ms.iter().sum();
    groups
        .into_iter()
        .map(|(_, c, count, t)| rate_row(c.name, c.kind, count, c.flops, c.bytes, t, total))
        .collect()
}

/// The `--layers` result: one row per layer group or op, and the totals per kind of op.
struct LayerTable {
    rows: Vec<LayerRow>,
    kinds: Vec<LayerRow>,
}

fn rate_row(
    name: &'static str,
    kind: OpKind,
    count: usize,
    flops: f64,
    bytes: f64,
    ms: f64,
    total: f64,
) -> LayerRow {
    let secs = ms / 1000.0;
    let rate = |x: f64| if secs > 0.0 { x / secs } else { 0.0 };
    LayerRow {
        name,
        kind,
        count,
        ms,
        tflops: rate(flops) / 1e12,
        gbps: rate(bytes) / 1e9,
        share: if total > 0.0 { ms / total } else { 0.0 },
    }
}

/// Totals per kind of op (GEMM, attention, norm, ...), in order of first appearance; empty when every row
/// is of one kind (the table's sum says it all).
fn kind_rows(costs: &[LayerCost], ms: &[f64]) -> Vec<LayerRow> {
    let mut rows = summed(costs, ms, |c| c.kind);
    if rows.len() < 2 {
        return Vec::new();
    }
    for r in &mut rows {
        r.name = r.kind.name();
    }
    rows
}

impl Bench<'_> {
    /// Per-layer-group timings: `pass(mark)` queues one marked forward pass (direct launches); events
    /// are recorded at each mark; median over `iters` passes after `warmup` passes.
    fn time_layers(
        &self,
        costs: &[LayerCost],
        pass: &mut dyn FnMut(Mark) -> styleforge::Result<()>,
    ) -> Result<LayerTable, String> {
        let cuda = |what: &str, e: cust::error::CudaError| format!("{what}: {e}");
        let gpu = self.gpu;
        for _ in 0..self.args.warmup {
            pass(&mut |_| Ok(())).map_err(|e| e.to_string())?;
        }
        gpu.synchronize().map_err(|e| e.to_string())?;
        let mut events = Vec::with_capacity(costs.len() + 1);
        for _ in 0..=costs.len() {
            events.push(Event::new(EventFlags::DEFAULT).map_err(|e| cuda("creating an event", e))?);
        }
        let mut times: Vec<Vec<f32>> = vec![Vec::with_capacity(self.args.iters); costs.len()];
        for _ in 0..self.args.iters {
            events[0]
                .record(gpu.stream())
                .map_err(|e| cuda("recording an event", e))?;
            let mut i = 0usize;
            pass(&mut |name| {
                i += 1;
                let ev = events
                    .get(i)
                    .filter(|_| costs.get(i - 1).is_some_and(|c| c.name == name))
                    .ok_or_else(|| {
                        styleforge::Error::Other(format!(
                            "layer group `{name}` (#{i}) does not match the cost table"
                        ))
                    })?;
                ev.record(gpu.stream())
                    .map_err(|source| styleforge::Error::Cuda {
                        what: "recording an event".into(),
                        source,
                    })
            })
            .map_err(|e| e.to_string())?;
            if i != costs.len() {
                return Err(format!("{i} layer groups marked, {} expected", costs.len()));
            }
            events[i].synchronize().map_err(|e| {
                cuda(
                    "waiting for the forward pass (a kernel may have faulted)",
                    e,
                )
            })?;
            for (k, t) in times.iter_mut().enumerate() {
                t.push(
                    events[k + 1]
                        .elapsed_time_f32(&events[k])
                        .map_err(|e| cuda("reading the event timer", e))?,
                );
            }
        }
        let medians: Vec<f64> = times.iter_mut().map(|t| median_min(t).0).collect();
        Ok(LayerTable {
            rows: layer_rows(costs, &medians),
            kinds: kind_rows(costs, &medians),
        })
    }

    fn tnet_layers(&self, gnet: &mut GpuTnet, x: &DeviceTensor) -> Result<LayerTable, String> {
        let costs = gnet.layer_costs(&x.shape).map_err(|e| e.to_string())?;
        self.time_layers(&costs, &mut |mark| {
            gnet.forward_device_marked(x, mark).map(|_| ())
        })
    }

    fn print_layers(
        &self,
        model: &str,
        precision: Precision,
        size: usize,
        batch: usize,
        table: &LayerTable,
    ) {
        if self.args.json {
            for r in &table.rows {
                println!("{}", r.json(model, precision, size, batch));
            }
            for r in &table.kinds {
                println!("{}", r.json_value(model, precision, size, batch, None));
            }
        } else {
            println!("  per layer group, {model} {} {size}x{size} batch {batch} (direct launches, median; n = marks summed):", precision.name());
            let head = || {
                println!(
                    "  {:<20} {:>3} {:>10} {:>9} {:>9} {:>8}",
                    "layer", "n", "ms", "TFLOP/s", "GB/s", "share"
                )
            };
            head();
            for r in &table.rows {
                println!("{}", r.line());
            }
            let total: f64 = table.rows.iter().map(|r| r.ms).sum();
            println!("  {:<24} {:>10.4}", "sum", total);
            if !table.kinds.is_empty() {
                println!("  per kind of op:");
                for r in &table.kinds {
                    println!("{}", r.line());
                }
            }
        }
        let _ = std::io::stdout().flush();
    }

    /// Emits the row, then its per-layer table when `--layers` produced one.
    fn emit_with_layers(
        &mut self,
        r: Result<(Row, Option<LayerTable>), String>,
        what: String,
        model: &str,
    ) {
        match r {
            Ok((row, layers)) => {
                let (precision, size, batch) = (row.precision, row.size, row.batch);
                self.emit(Ok(row), what);
                if let Some(rows) = layers {
                    self.print_layers(model, precision, size, batch, &rows);
                }
            }
            Err(e) => self.emit(Err(e), what),
        }
    }

    fn emit(&mut self, r: Result<Row, String>, what: String) {
        match r {
            Ok(row) => println!(
                "{}",
                if self.args.json {
                    row.json()
                } else {
                    row.line()
                }
            ),
            Err(e) => {
                self.failures += 1;
                if self.args.json {
                    println!("{}", serde_json::json!({ "config": what, "error": e }));
                } else {
                    eprintln!("error: {what}: {e}");
                }
            }
        }
        let _ = std::io::stdout().flush();
    }

    /// One row per size, batch and precision (the precisions of one configuration next to each other).
    /// The GPU net is built for each row, so only one precision's activation buffers are held at a time.
    fn transformer_net(&mut self) {
        let weights = model::random_tnet_weights(&mut self.rng);
        let net = match TransformerNet::new(weights) {
            Ok(n) => n,
            Err(e) => return self.emit(Err(e.to_string()), "transformer_net".into()),
        };
        let precisions = precision::dedup(&self.args.precision);
        for &b in &self.args.batch {
            for &s in &self.args.sizes {
                let x = match random_device(&mut self.rng, &[b, 3, s, s], 255.0) {
                    Ok(x) => x,
                    Err(e) => {
                        self.emit(Err(e), format!("transformer_net {s}x{s} batch {b}"));
                        continue;
                    }
                };
                for &p in &precisions {
                    let what = format!("transformer_net {} {s}x{s} batch {b}", p.name());
                    let r = (|| {
                        ensure_fits(self.gpu, precision::bytes(p, b, s, s))?;
                        let mut gnet = GpuTnet::new(self.gpu, &net, p)
                            .map_err(|e| format!("uploading the weights: {e}"))?;
                        gnet.set_use_graph(!self.args.no_graph);
                        let (median_ms, min_ms) =
                            time_on_stream(self.gpu, self.args.warmup, self.args.iters, || {
                                gnet.forward_device(&x)
                                    .map(|_| ())
                                    .map_err(|e| e.to_string())
                            })?;
                        let graph = graph_used(gnet.use_graph(), gnet.graph_error(), &what);
                        let row = Row {
                            model: "transformer_net",
                            variant: "-",
                            precision: p,
                            size: s,
                            batch: b,
                            tokens: None,
                            median_ms,
                            min_ms,
                            graph,
                        };
                        let layers = if self.args.layers {
                            Some(self.tnet_layers(&mut gnet, &x)?)
                        } else {
                            None
                        };
                        Ok((row, layers))
                    })();
                    self.emit_with_layers(r, what, "transformer_net");
                }
            }
        }
    }

    fn vit(&mut self, variant: &'static str) {
        let label = format!("vit-{variant}");
        let Some(mut cfg) = StyleVitConfig::variant(variant) else {
            return self.emit(Err(format!("unknown StyleViT variant `{variant}`")), label);
        };
        cfg.patch_size = self.args.patch;
        let (p, ss) = (cfg.patch_size, self.args.style_size);
        if ss % p != 0 {
            return self.emit(
                Err(format!(
                    "--style-size {ss} is not a multiple of --patch {p}"
                )),
                label,
            );
        }
        let weights = model::random_vit_weights(&cfg, &mut self.rng);
        let net = match StyleVit::new(cfg, weights) {
            Ok(n) => n,
            Err(e) => return self.emit(Err(e.to_string()), label),
        };
        for prec in self.args.precision.clone() {
            {
                let mut gnet = match GpuVit::new(self.gpu, &net, prec) {
                    Ok(n) => n,
                    Err(e) => return self.emit(Err(format!("uploading the weights: {e}")), label),
                };
                gnet.set_use_graph(!self.args.no_graph);
                for &b in &self.args.batch {
                    for &s in &self.args.sizes {
                        let what = format!("{label} {} {s}x{s} batch {b}", prec.name());
                        let r = (|| {
                            if s % p != 0 {
                                return Err(format!(
                                    "size {s} is not a multiple of the patch size {p}"
                                ));
                            }
                            let sb = if self.args.one_style { 1 } else { b };
                            ensure_fits(self.gpu, model::vit_bytes(&cfg, b, s, s, sb, ss, ss))?;
                            let x = random_device(&mut self.rng, &[b, 3, s, s], 1.0)?;
                            let style = random_device(&mut self.rng, &[sb, 3, ss, ss], 1.0)?;
                            let (median_ms, min_ms) = time_on_stream(
                                self.gpu,
                                self.args.warmup,
                                self.args.iters,
                                || {
                                    gnet.forward_device(&x, &style, 1.0)
                                        .map(|_| ())
                                        .map_err(|e| e.to_string())
                                },
                            )?;
                            let tokens = Some((s / p) * (s / p));
                            let graph = graph_used(gnet.use_graph(), gnet.graph_error(), &what);
                            let row = Row {
                                model: "style_vit",
                                variant,
                                precision: prec,
                                size: s,
                                batch: b,
                                tokens,
                                median_ms,
                                min_ms,
                                graph,
                            };
                            let layers = if self.args.layers {
                                let costs = gnet
                                    .layer_costs(&x.shape, &style.shape)
                                    .map_err(|e| e.to_string())?;
                                Some(self.time_layers(&costs, &mut |mark| {
                                    gnet.forward_device_marked(&x, &style, 1.0, mark)
                                        .map(|_| ())
                                })?)
                            } else {
                                None
                            };
                            Ok((row, layers))
                        })();
                        self.emit_with_layers(r, what, &label);
                    }
                }
            }
        }
    }
}

/// Expands `all` and removes repeats, keeping the order given.
fn model_list(given: &[BenchModel]) -> Vec<BenchModel> {
    let all = [
        BenchModel::TransformerNet,
        BenchModel::VitNano,
        BenchModel::VitSmall,
        BenchModel::VitBase,
        BenchModel::VitLarge,
    ];
    let mut out = Vec::new();
    for m in given {
        let items: &[BenchModel] = if *m == BenchModel::All {
            &all
        } else {
            std::slice::from_ref(m)
        };
        for i in items {
            if !out.contains(i) {
                out.push(*i);
            }
        }
    }
    out
}

pub fn run(a: BenchArgs, ptx: Option<PathBuf>) -> Outcome {
    if a.iters == 0 {
        return Err(Failure::setup("--iters must be at least 1"));
    }
    if a.sizes.is_empty() || a.sizes.contains(&0) || a.batch.is_empty() || a.batch.contains(&0) {
        return Err(Failure::setup("--sizes and --batch need positive values"));
    }
    if a.patch == 0 || a.style_size == 0 {
        return Err(Failure::setup("--patch and --style-size must be positive"));
    }
    let gpu = open_gpu(ptx).map_err(|m| Failure::setup(format!("bench needs a GPU: {m}")))?;
    eprintln!(
        "GPU: {}; {} warm-up + {} timed runs per configuration (CUDA events, {}; programmatic dependent launch {})",
        gpu.name,
        a.warmup,
        a.iters,
        if a.no_graph {
            "direct launches"
        } else {
            "CUDA graph replay"
        },
        if gpu.uses_pdl() { "on" } else { "off (STYLEFORGE_PDL=0 or pre-sm_90)" }
    );
    if model_list(&a.model).contains(&BenchModel::TransformerNet) {
        let names: Vec<&str> = precision::dedup(&a.precision)
            .iter()
            .map(|p| p.name())
            .collect();
        eprintln!("precision: {}", names.join(", "));
    }
    let mut bench = Bench {
        gpu: &gpu,
        args: &a,
        rng: rand::rngs::StdRng::seed_from_u64(0x5f0e),
        failures: 0,
    };
    if !a.json {
        println!("{}", header());
    }
    if a.tensor_peak {
        if let Err(e) = tensor_peak(&gpu, &a) {
            eprintln!("tensor peak: {e}");
            bench.failures += 1;
        }
    }
    for m in model_list(&a.model) {
        match m.vit_variant() {
            Some(v) => bench.vit(v),
            None => bench.transformer_net(),
        }
    }
    Ok(if bench.failures > 0 { 1 } else { 0 })
}

/// `--tensor-peak`: `wgmma_peak` per mode and warpgroup count on one block per SM.
fn tensor_peak(gpu: &Gpu, a: &BenchArgs) -> Result<(), String> {
    use styleforge::ops::linear_wg::{wgmma_peak, WGMMA_PEAK_MODES};
    let sms = gpu.sm_count;
    let iters = 20_000u32;
    let mut out = DeviceTensor::empty(&[sms as usize * 256], styleforge::gpu::DType::F32, Layout::RowMajor).map_err(|e| e.to_string())?;
    println!("tensor pipe ceiling (wgmma_peak: {sms} blocks, {iters} K-stages of 64 per warpgroup, smem never refilled)");
    println!("  {:<34} {:>4} {:>10} {:>9}", "MMA tile per warpgroup", "WGs", "median ms", "TFLOP/s");
    for (mode, (name, macs)) in WGMMA_PEAK_MODES.iter().enumerate() {
        for active in [1u32, 2] {
            let (ms, _) = time_on_stream(gpu, a.warmup.min(2), a.iters.min(5), || {
                wgmma_peak(gpu, &mut out, sms, iters, mode as u32, active).map_err(|e| e.to_string())
            })?;
            let flops = 2.0 * (sms * active) as f64 * iters as f64 * 4.0 * *macs as f64;
            println!("  {name:<34} {active:>4} {ms:>10.3} {:>9.1}", flops / ms / 1e9);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_min() {
        assert_eq!(median_min(&mut [3.0, 1.0, 2.0]), (2.0, 1.0));
        assert_eq!(median_min(&mut [4.0, 1.0, 2.0, 3.0]), (2.5, 1.0));
    }

    #[test]
    fn all_expands_once() {
        let l = model_list(&[BenchModel::VitBase, BenchModel::All]);
        assert_eq!(l.len(), 5);
        assert_eq!(l[0], BenchModel::VitBase);
        assert_eq!(l[1], BenchModel::TransformerNet);
    }

    #[test]
    fn row_json_has_fields() {
        let r = Row {
            model: "style_vit",
            variant: "nano",
            precision: Precision::Fp32,
            size: 256,
            batch: 2,
            tokens: Some(64),
            median_ms: 4.0,
            min_ms: 3.5,
            graph: true,
        };
        let v: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(v["images_per_s"], 500.0);
        assert_eq!(v["tokens"], 64);
        assert_eq!(v["variant"], "nano");
        assert_eq!(v["graph"], true);
        assert_eq!(v["precision"], "fp32");
        // The table's columns line up with the header.
        assert_eq!(r.line().len(), header().len());
        assert!(header().contains("precision") && r.line().contains(" fp32 "));
    }

    #[test]
    fn layer_rows_rates_and_shares() {
        let costs = [
            LayerCost {
                name: "a",
                kind: OpKind::Gemm,
                flops: 2e9,
                bytes: 1e9,
            },
            LayerCost {
                name: "b",
                kind: OpKind::Norm,
                flops: 0.0,
                bytes: 3e9,
            },
        ];
        let rows = layer_rows(&costs, &[2.0, 6.0]);
        assert!(rows.iter().all(|r| r.count == 1));
        assert_eq!(rows.len(), 2);
        // 2e9 FLOP in 2 ms = 1 TFLOP/s; 1e9 B in 2 ms = 500 GB/s; 2 of 8 ms = 25 %.
        assert!((rows[0].tflops - 1.0).abs() < 1e-12);
        assert!((rows[0].gbps - 500.0).abs() < 1e-9);
        assert!((rows[0].share - 0.25).abs() < 1e-12);
        assert!((rows[1].share - 0.75).abs() < 1e-12);
        assert_eq!(rows[1].tflops, 0.0);
        let v: serde_json::Value =
            serde_json::from_str(&rows[1].json("transformer_net", Precision::Fp16, 256, 1))
                .unwrap();
        assert_eq!(v["layer"], "b");
        assert_eq!(v["precision"], "fp16");
        assert_eq!(v["size"], 256);
        assert_eq!(v["kind"], "norm");
    }

    #[test]
    fn layer_rows_sum_repeated_marks_and_kinds() {
        // Two blocks of (gemm "g", attention "a"), then a gemm "t": "g" and "a" are summed per name, and
        // the kind totals put "t" with "g".
        let c = |name, kind, flops| LayerCost {
            name,
            kind,
            flops,
            bytes: 0.0,
        };
        let costs = [
            c("g", OpKind::Gemm, 1e9),
            c("a", OpKind::Attention, 4e9),
            c("g", OpKind::Gemm, 1e9),
            c("a", OpKind::Attention, 4e9),
            c("t", OpKind::Gemm, 2e9),
        ];
        let ms = [1.0, 2.0, 1.0, 2.0, 4.0];
        let rows = layer_rows(&costs, &ms);
        let names: Vec<_> = rows.iter().map(|r| (r.name, r.count)).collect();
        assert_eq!(names, [("g", 2), ("a", 2), ("t", 1)]);
        assert!((rows[0].ms - 2.0).abs() < 1e-12 && (rows[0].tflops - 1.0).abs() < 1e-12);
        assert!((rows[1].ms - 4.0).abs() < 1e-12 && (rows[1].tflops - 2.0).abs() < 1e-12);
        assert!((rows[1].share - 0.4).abs() < 1e-12);
        let kinds = kind_rows(&costs, &ms);
        let k: Vec<_> = kinds.iter().map(|r| (r.kind, r.count)).collect();
        assert_eq!(k, [(OpKind::Gemm, 3), (OpKind::Attention, 2)]);
        assert!(
            (kinds[0].ms - 6.0).abs() < 1e-12
                && (kinds[0].tflops - 4e9 / 6e-3 / 1e12).abs() < 1e-12
        );
        // One kind only: no totals.
        assert!(kind_rows(&costs[..1], &ms[..1]).is_empty());
    }
}
