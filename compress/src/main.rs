//! `ocelli-compress`: optimise, quantise, prune and evaluate ONNX detectors for tract.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ocelli::update::sign;
use ocelli_compress::onnx::Model;
use ocelli_compress::{
    Error, card, compare_models, data, eval, measure, optimize, pattern_input, probe, prune,
    quantize,
};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
enum Command {
    /// Rewrite a float model so tract runs it fast, with the same outputs (within --tolerance).
    Optimize {
        input: PathBuf,
        output: PathBuf,
        /// Fix the input's width and height.
        #[arg(long, num_args = 2, value_names = ["W", "H"])]
        input_size: Option<Vec<usize>>,
        /// Photos to check the outputs on (default: a synthetic input).
        #[arg(long)]
        images: Option<PathBuf>,
        #[command(flatten)]
        setup: data::Setup,
        /// Largest output difference allowed, relative where outputs exceed 1.
        #[arg(long, default_value_t = 1e-4)]
        tolerance: f32,
    },
    /// Compare a candidate model with a reference through the runtime's detector: detection
    /// agreement, latency (taking turns), file size and peak memory.
    Eval {
        #[arg(long)]
        reference: PathBuf,
        #[arg(long)]
        candidate: PathBuf,
        #[arg(long)]
        images: PathBuf,
        #[command(flatten)]
        setup: data::Setup,
        /// Timed runs of each model per image (at least 1: the card records the latency ratio).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
        rounds: u64,
        /// Print the report as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Load a model as the runtime does, run one image, print the process's peak memory (kB).
    #[command(hide = true)]
    Memprobe {
        model: PathBuf,
        image: PathBuf,
        #[command(flatten)]
        setup: data::Setup,
    },
    /// Time chains of convolutions of typical shapes in each ONNX representation (float, QDQ,
    /// QLinearConv on u8 or i8, QLinearConv with float between layers) in tract.
    Probe {
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        #[arg(long)]
        json: bool,
        /// Also write each probe model here, to profile them one by one.
        #[arg(long)]
        save: Option<PathBuf>,
    },
    /// Time models side by side in tract (taking turns), on a synthetic input.
    Time {
        models: Vec<PathBuf>,
        #[arg(long, num_args = 2, value_names = ["W", "H"])]
        input_size: Option<Vec<usize>>,
        #[arg(long, default_value_t = 30)]
        rounds: usize,
        /// Also time each model with tract's own int8 ops instead of the runtime's fast ones
        /// (marked "tract ops").
        #[arg(long)]
        tract_ops: bool,
        /// Time each model at each of these thread counts (e.g. 1,2), as `[board] threads` runs it.
        #[arg(long, value_delimiter = ',', default_value = "1")]
        threads: Vec<usize>,
        /// The input: raw little-endian f32 values of the model's input shape.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Load, print "ready N", then for each line "I" on stdin run plan I (models in order,
        /// each at every --threads) once and print its milliseconds: another program (the
        /// onnxruntime comparison) takes turns with it.
        #[arg(long)]
        serve: bool,
    },
    /// Post-training static int8: calibrate on a folder of images, give each convolution the
    /// fastest form tract runs for it, keep float what costs accuracy.
    Quantize {
        input: PathBuf,
        output: PathBuf,
        /// Calibration images (keep them apart from evaluation images).
        #[arg(long)]
        calib: PathBuf,
        /// How the activations' clipping thresholds are chosen.
        #[arg(long, value_enum, default_value = "entropy")]
        method: ocelli_compress::calib::Method,
        #[arg(long, num_args = 2, value_names = ["W", "H"])]
        input_size: Option<Vec<usize>>,
        #[command(flatten)]
        setup: data::Setup,
        /// Least mAP@0.5 against float on the calibration images.
        #[arg(long, default_value_t = 0.98)]
        min_map: f64,
        /// Largest score change of a matched detection on the calibration images.
        #[arg(long, default_value_t = 0.1)]
        max_drift: f32,
        /// Least mask or text-region IoU against float on the calibration images (masks, text).
        #[arg(long, default_value_t = 0.9)]
        min_iou: f64,
        /// Largest mean keypoint distance from float's, in pixels (pose).
        #[arg(long, default_value_t = 2.0)]
        max_keypoint_px: f64,
        /// Choose each layer's form from these timings, taken on the board by `ocelli
        /// profile-layers`, instead of timing the layers on this host.
        #[arg(long)]
        layer_timings: Option<PathBuf>,
        /// Leave depthwise layers' input channels as they are; otherwise `minmax` evens them
        /// out first.
        #[arg(long)]
        no_equalize: bool,
        #[arg(long)]
        json: bool,
    },
    /// Structured channel pruning: remove the weakest output channels of convolutions, with
    /// the matching input channels of their readers.
    Prune {
        input: PathBuf,
        output: PathBuf,
        /// Fraction of each prunable channel group removed.
        #[arg(long)]
        ratio: f32,
        #[arg(long, num_args = 2, value_names = ["W", "H"])]
        input_size: Option<Vec<usize>>,
        /// Images on which channels are ranked and the remaining weights refitted to
        /// reproduce the unpruned layers' outputs (layer-wise reconstruction).
        #[arg(long)]
        calib: Option<PathBuf>,
        #[command(flatten)]
        setup: data::Setup,
        /// How channels are ranked with --calib (without it: by weight norm).
        #[arg(long, value_enum, default_value_t = prune::Keep::Energy)]
        keep: prune::Keep,
        /// Which convolutions --calib refits.
        #[arg(long, value_enum, default_value_t = prune::Refit::All)]
        refit: prune::Refit,
    },
    /// Write a new Ed25519 key pair for signing update bundles: the secret key to KEY (mode
    /// 0600), the public key, which devices trust, to KEY.pub. Never overwrites.
    Keygen {
        #[arg(long, value_name = "KEY")]
        out: PathBuf,
    },
    /// Sign a config fragment and the files it names into an update bundle (docs/fleet.md).
    Bundle {
        /// The secret key file, from `keygen`.
        #[arg(long)]
        key: PathBuf,
        /// The bundle's version: devices refuse one not newer than what they run.
        #[arg(long)]
        version: u64,
        /// A TOML file of `[[detector]]` (and `[[classifier]]`) tables; their paths are the
        /// files' names.
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// The models, cards, labels and galleries the fragment names.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Time each of tract's operators on a model, most expensive first.
    Profile {
        model: PathBuf,
        #[arg(long, num_args = 2, value_names = ["W", "H"])]
        input_size: Option<Vec<usize>>,
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// Operators listed.
        #[arg(long, default_value_t = 25)]
        top: usize,
        /// Keep tract's own int8 ops (QuantizeLinearI8, Im2col) instead of the runtime's fast ones.
        #[arg(long)]
        tract_ops: bool,
        /// Profile at each of these thread counts (as `[board] threads`), taking turns, and
        /// compare the first with the last per operator kind.
        #[arg(long, value_delimiter = ',', default_value = "1")]
        threads: Vec<usize>,
    },
}

/// Peak memory of a fresh process that loads `model` and runs `image`: models measured in one
/// process would share (and hide) each other's peaks.
fn memprobe(model: &std::path::Path, image: &std::path::Path, setup: &data::Setup) -> Option<u64> {
    let mut cmd = std::process::Command::new(std::env::current_exe().ok()?);
    cmd.arg("memprobe").arg(model).arg(image).args(setup.args());
    let out = cmd.output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// `time --serve`: one timed run per plan index read from stdin, its milliseconds on stdout.
fn serve_timings(
    runs: &[(
        &measure::Plan,
        tract_onnx::tract_core::tract_linalg::multithread::Executor,
    )],
    input: &tract_onnx::prelude::Tensor,
) -> anyhow::Result<()> {
    use std::io::{BufRead, Write};
    let mut timer = measure::Timer::new(runs, input)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {}", runs.len())?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let i: usize = line
            .trim()
            .parse()
            .ok()
            .filter(|i| *i < runs.len())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "stdin: expected a plan index below {}, got {line:?}",
                    runs.len()
                )
            })?;
        writeln!(out, "{}", timer.time(i)?)?;
        out.flush()?;
    }
    Ok(())
}

fn size(v: &Option<Vec<usize>>) -> Option<[usize; 2]> {
    v.as_ref().map(|v| [v[0], v[1]])
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    // Every option, defaults included, for the cards of the models written.
    let options = serde_json::to_value(&cli.command).expect("serialisable");
    match cli.command {
        Command::Optimize {
            input,
            output,
            input_size,
            images,
            setup,
            tolerance,
        } => {
            let original = Model::load(&input)?;
            eprintln!("optimize: {}: rewriting", input.display());
            let mut model = original.clone();
            let opts = optimize::Options {
                input_size: size(&input_size),
            };
            let report = optimize::optimize(&mut model, &opts)?;
            let shape = report.input_shape;
            let inputs = match &images {
                Some(dir) => {
                    let cfg = data::detector_config(&input, &setup)?;
                    data::input_tensors(dir, &cfg.preprocess, shape)?
                }
                None => vec![pattern_input(shape, 0.0, 1.0)],
            };
            eprintln!(
                "optimize: checking outputs on {} input(s) through tract",
                inputs.len()
            );
            model.path = output.clone();
            let error = compare_models(&original, &model, shape, &inputs)?;
            if error > tolerance {
                return Err(Error::Mismatch {
                    path: output,
                    error,
                    tolerance,
                });
            }
            model.save(&output)?;
            card::write_new(&output, &input, &options, &setup, None)?;
            println!(
                "{}: input {:?}; value_info stripped {}; batchnorms folded {}; constants folded {}; \
                 softmaxes rewritten {}; maxpools separated {}; nodes {} -> {}; max output difference {:.1e} on {} input(s)",
                output.display(),
                shape,
                report.value_info_stripped,
                report.batchnorms_folded,
                report.constants_folded,
                report.softmaxes_rewritten,
                report.maxpools_separated,
                report.nodes_before,
                report.nodes_after,
                error,
                inputs.len()
            );
            Ok(())
        }
        Command::Eval {
            reference,
            candidate,
            images,
            setup,
            rounds,
            json,
        } => {
            let cfg = data::detector_config(&reference, &setup)?;
            let opts = eval::Options {
                rounds: rounds as usize,
                setup: setup.pinned(&cfg),
            };
            let mut report =
                eval::eval(&reference, &candidate, &images, &opts, |m| eprintln!("{m}"))?;
            if let Some(card) = card::add_eval(&report, &images)? {
                eprintln!("eval: summary added to {}", card.display());
            }
            let first = data::image_files(&images)?.remove(0);
            for m in [&mut report.reference, &mut report.candidate] {
                m.peak_rss_kb = memprobe(&m.path, &first, &opts.setup);
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("serialisable")
                );
            } else {
                print!("{}", eval::table(&report));
            }
            Ok(())
        }
        Command::Memprobe {
            model,
            image,
            setup,
        } => {
            let cfg = data::detector_config(&model, &setup)?;
            let mut d = ocelli::detect::Detector::load(&cfg, |p| p.to_path_buf())
                .map_err(|e| Error::run(&model, &e.into()))?;
            let rgb = data::load_image(&image)?;
            let mut out = ocelli::detect::Detections::new();
            d.detect(&rgb, &mut out)
                .map_err(|e| Error::run(&model, &e.into()))?;
            println!("{}", measure::peak_rss_kb().unwrap_or(0));
            Ok(())
        }
        Command::Probe { rounds, json, save } => {
            if let Some(dir) = &save {
                for s in probe::SHAPES {
                    for r in probe::REPRS {
                        let kind = if s.depthwise { "dw" } else { "conv" };
                        let name =
                            format!("{kind}{}_c{}_{}_{r:?}.onnx", s.kernel, s.channels, s.size);
                        probe::chain_model(s, r).save(&dir.join(name))?;
                    }
                }
            }
            let rows =
                probe::probe(&probe::SHAPES, rounds, |m| eprintln!("{m}")).map_err(Error::Model)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rows).expect("serialisable")
                );
                return Ok(());
            }
            println!("fastest of {rounds} runs, ms (ratio to float)");
            print!("{:<26}", "layer (chain of 4, +ReLU)");
            for r in probe::REPRS {
                print!(" {:>14}", format!("{r:?}"));
            }
            println!();
            for row in rows {
                let s = row.shape;
                let kind = if s.depthwise { "dw" } else { "conv" };
                print!(
                    "{:<26}",
                    format!(
                        "{kind} {}x{} c{} @{}",
                        s.kernel, s.kernel, s.channels, s.size
                    )
                );
                let base = row.ms[0].1;
                for (_, ms) in &row.ms {
                    print!(" {:>6.2} ({:.2}×)", ms, ms / base);
                }
                println!();
            }
            Ok(())
        }
        Command::Time {
            models,
            input_size,
            rounds,
            tract_ops,
            threads,
            input,
            serve,
        } => {
            let loaded = models
                .iter()
                .map(|p| Model::load(p))
                .collect::<Result<Vec<_>, _>>()?;
            let shape = loaded[0].input_shape(size(&input_size))?;
            // tract would plan a model for an input it was not built for, and time that.
            for m in &loaded[1..] {
                match m.input_shape(size(&input_size)) {
                    Ok(s) if s != shape => {
                        return Err(m
                            .graph_err(format!(
                                "input is {s:?}, the first model's is {shape:?}: \
                                 time models that take the same input"
                            ))
                            .into());
                    }
                    _ => {}
                }
            }
            let fast = if tract_ops {
                &[true, false][..]
            } else {
                &[true]
            };
            let runs: Vec<(&PathBuf, &Model, bool, usize)> = models
                .iter()
                .zip(&loaded)
                .flat_map(|(p, m)| fast.iter().map(move |f| (p, m, *f)))
                .flat_map(|(p, m, f)| threads.iter().map(move |t| (p, m, f, *t)))
                .collect();
            let plans = runs
                .iter()
                .map(|(_, m, f, _)| m.plan_with(shape, *f))
                .collect::<Result<Vec<_>, _>>()?;
            let input = match &input {
                Some(path) => data::raw_f32_tensor(path, shape)?,
                None => pattern_input(shape, 0.0, 1.0),
            };
            let executors: Vec<_> = threads
                .iter()
                .map(|t| (*t, ocelli::service::executor(*t)))
                .collect();
            let timed: Vec<_> = runs
                .iter()
                .zip(&plans)
                .map(|((.., t), p)| {
                    (
                        p,
                        executors
                            .iter()
                            .find(|(n, _)| n == t)
                            .expect("listed")
                            .1
                            .clone(),
                    )
                })
                .collect();
            if serve {
                return serve_timings(&timed, &input).map_err(|e| Error::run(&models[0], &e));
            }
            eprintln!(
                "time: {} model(s), {rounds} rounds each, taking turns",
                plans.len()
            );
            let times = measure::time_runs(&timed, &input, 3, rounds)
                .map_err(|e| Error::run(&models[0], &e))?;
            let base = measure::median(&times[0]);
            for ((p, _, f, t), ts) in runs.iter().zip(&times) {
                let m = measure::median(ts);
                println!(
                    "median {:>8.2} ms  {:>5.2}×   fastest {:>8.2} ms  {}{}{}",
                    m,
                    m / base,
                    measure::min(ts),
                    p.display(),
                    if *f { "" } else { " (tract ops)" },
                    if threads.len() > 1 {
                        format!(" ({t} threads)")
                    } else {
                        String::new()
                    }
                );
            }
            Ok(())
        }
        Command::Quantize {
            input,
            output,
            calib,
            method,
            input_size,
            setup,
            min_map,
            max_drift,
            min_iou,
            max_keypoint_px,
            layer_timings,
            no_equalize,
            json,
        } => {
            let model = Model::load(&input)?;
            let timings = match &layer_timings {
                Some(path) => {
                    quantize::BoardTimings::load(path, &setup, |w| eprintln!("warning: {w}"))?
                }
                None => None,
            };
            let opts = quantize::Options {
                method,
                input_size: size(&input_size),
                setup,
                min_map,
                max_score_drift: max_drift,
                min_iou,
                max_keypoint_px,
                timings,
                equalize: !no_equalize,
                ..Default::default()
            };
            let (q, report) = quantize::quantize(&model, &calib, &opts, |m| eprintln!("{m}"))?;
            q.save(&output)?;
            card::write_new(&output, &input, &options, &opts.setup, Some(&calib))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("serialisable")
                );
                return Ok(());
            }
            println!(
                "{:<44} {:>16} {:>9} {:>9}  {:<15} sensitivity",
                "layer", "weights", "float ms", "int8 ms", "form"
            );
            for l in &report.layers {
                println!(
                    "{:<44} {:>16} {:>9.3} {:>9.3}  {:<15} {}",
                    l.output,
                    format!("{:?}", l.weight_shape),
                    l.float_ms,
                    l.int8_ms,
                    format!("{:?}{}", l.form, if l.head { " head" } else { "" }),
                    l.sensitivity.map_or("-".into(), |s| format!("{s:.4}"))
                );
            }
            let bytes = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            println!(
                "{}: {} ConvInteger, {} int8 weights, {} float; {} depthwise input(s) evened out; \
                 {} moved towards float; {:.2} MB -> {:.2} MB ({:.2}×); agreement on {} \
                 calibration images: mAP@0.5 {:.3}, max score drift {:.3}{}",
                output.display(),
                report.count(ocelli::model::layers::Form::ConvInteger),
                report.count(ocelli::model::layers::Form::WeightInt8),
                report.count(ocelli::model::layers::Form::Float),
                report.equalized,
                report.reverted,
                bytes(&input) as f64 / 1e6,
                bytes(&output) as f64 / 1e6,
                bytes(&output) as f64 / bytes(&input).max(1) as f64,
                report.calibration_images,
                report.map50,
                report.score_drift_max,
                report.family.after_map()
            );
            if let Some(t) = &report.timings {
                println!(
                    "layer timings: {} ({}, {} thread(s)): {} shape(s) from the table, {} timed on this host",
                    t.path.display(),
                    t.cpu,
                    t.threads,
                    t.from_table,
                    t.timed_here
                );
            }
            Ok(())
        }
        Command::Prune {
            input,
            output,
            ratio,
            input_size,
            calib,
            setup,
            keep,
            refit,
        } => {
            let model = Model::load(&input)?;
            eprintln!("prune: {}: grouping channels", input.display());
            let opts = prune::Options {
                ratio,
                input_size: size(&input_size),
                calib,
                setup,
                keep,
                refit,
            };
            let (mut pruned, r) = prune::prune(&model, &opts, |s| eprintln!("{s}"))?;
            pruned.path = output.clone();
            // The pruned graph must still load and run.
            let shape = pruned.input_shape(None)?;
            measure::run(&pruned.plan(shape)?, &pattern_input(shape, 0.0, 1.0))
                .map_err(|e| Error::run(&output, &e))?;
            pruned.save(&output)?;
            card::write_new(
                &output,
                &input,
                &options,
                &opts.setup,
                opts.calib.as_deref(),
            )?;
            println!(
                "{}: {}/{} channel groups pruned; channels {} -> {}; conv weights {} -> {} ({:.2}×)",
                output.display(),
                r.groups_pruned,
                r.groups,
                r.channels_before,
                r.channels_after,
                r.weights_before,
                r.weights_after,
                r.weights_after as f64 / r.weights_before.max(1) as f64
            );
            if !r.refit.is_empty() {
                let mean = |f: fn(&prune::Fit) -> f64| {
                    r.refit.iter().map(f).sum::<f64>() / r.refit.len() as f64
                };
                println!(
                    "refitted {} convolutions: relative output error on the calibration samples {:.3} -> {:.3} (mean), last layer {:.3} -> {:.3}",
                    r.refit.len(),
                    mean(|f| f.error_before),
                    mean(|f| f.error_after),
                    r.refit[r.refit.len() - 1].error_before,
                    r.refit[r.refit.len() - 1].error_after,
                );
            }
            Ok(())
        }
        Command::Keygen { out } => {
            let key = sign::keygen(&out)?;
            println!(
                "{}: secret key (keep it private); {}: public key {}",
                out.display(),
                sign::public_path(&out).display(),
                ocelli::update::bundle::key_id(&key)
            );
            Ok(())
        }
        Command::Bundle {
            key,
            version,
            config,
            out,
            files,
        } => {
            let m = sign::write(&sign::Request {
                key: &key,
                version,
                config: &config,
                files: &files,
                out: &out,
            })?;
            println!(
                "{}: version {}, {} file(s), {} bytes of payload, signed by {}",
                out.display(),
                m.version,
                m.files.len(),
                m.files.iter().map(|f| f.bytes).sum::<u64>(),
                m.signer
            );
            Ok(())
        }
        Command::Profile {
            model,
            input_size,
            rounds,
            top,
            tract_ops,
            threads,
        } => {
            let m = Model::load(&model)?;
            let shape = m.input_shape(size(&input_size))?;
            let plan = m.plan_with(shape, !tract_ops)?;
            let input = pattern_input(shape, 0.0, 1.0);
            let executors: Vec<_> = threads
                .iter()
                .map(|t| ocelli::service::executor(*t))
                .collect();
            let profiles = measure::profile(&plan, &input, rounds, &executors)
                .map_err(|e| Error::run(&model, &e))?;
            for (t, ops) in threads.iter().zip(&profiles) {
                let total: f64 = ops.iter().map(|o| o.us).sum();
                println!(
                    "{}: {:.2} ms per run (sum of operator medians), threads = {t}",
                    model.display(),
                    total / 1e3
                );
                println!("{:>9} {:>6}  {:<28} node", "us", "%", "op");
                for o in ops.iter().take(top) {
                    println!(
                        "{:>9.0} {:>5.1}%  {:<28} {}",
                        o.us,
                        100.0 * o.us / total,
                        o.op,
                        o.node
                    );
                }
                println!("by operator kind:");
                for (op, us, n) in measure::by_op(ops).iter().take(top) {
                    println!("{us:>9.0} {:>5.1}%  {op:<28} ×{n}", 100.0 * us / total);
                }
            }
            if let [first, .., last] = &profiles[..] {
                let (a, b) = (threads[0], threads[threads.len() - 1]);
                println!("by operator kind, threads = {a} against {b} (taking turns):");
                println!(
                    "{:>9} {:>9} {:>8}  op",
                    format!("us @{a}"),
                    format!("us @{b}"),
                    "speed-up"
                );
                let at_b = measure::by_op(last);
                for (op, us, n) in measure::by_op(first).iter().take(top) {
                    let other = at_b
                        .iter()
                        .find(|(o, ..)| o == op)
                        .map_or(f64::NAN, |x| x.1);
                    println!("{us:>9.0} {other:>9.0} {:>7.2}×  {op} ×{n}", us / other);
                }
            }
            Ok(())
        }
    }
}
