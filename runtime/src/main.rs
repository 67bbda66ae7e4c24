//! The `ocelli` command: run the pipeline, check configs, inspect models, probe cameras, record
//! calibration frames, time the models' layers, tail the stream.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ocelli::config::Config;
use ocelli::detect::load_plan;

#[derive(Parser)]
#[command(
    version,
    about = "Camera in, detections out: a lean vision runtime for embedded Linux boards"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline a config describes until the source ends or SIGTERM.
    Run {
        /// The config file.
        #[arg(default_value = "/etc/ocelli/ocelli.toml")]
        config: PathBuf,
    },
    /// Validate a config: keys, types, files, model checksums.
    CheckConfig { config: PathBuf },
    /// Print a model's inputs, outputs, the family Ocelli recognises, and its card if one sits
    /// beside it; or an update bundle's manifest, config fragment and signature, failing when
    /// the bundle is refused.
    Inspect {
        model: PathBuf,
        /// Input width and height, for models whose input size is not fixed.
        #[arg(long, value_names = ["W", "H"], num_args = 2)]
        input_size: Option<Vec<usize>>,
        /// A bundle's trusted public keys (`KEY.pub`).
        #[arg(long, value_name = "KEY.pub")]
        trust: Vec<PathBuf>,
    },
    /// List V4L2 devices with their formats, sizes and frame intervals.
    Probe {
        /// Devices to list; all /dev/video* when none.
        devices: Vec<PathBuf>,
    },
    /// Save frames from a config's source as PNG files: a calibration set for
    /// `ocelli-compress quantize --calib` from the device's own camera.
    Record {
        /// The config whose `[source]` to read.
        config: PathBuf,
        /// Folder for the PNG files, created if missing.
        #[arg(long)]
        out: PathBuf,
        /// Frames to save.
        #[arg(long, default_value_t = 100)]
        frames: usize,
        /// Save one frame in this many, so that the set spans more of the scene's changes.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
        every: u64,
    },
    /// Time each distinct convolution shape of a config's models alone, in float and as int8,
    /// with this board's kernels and threads: the table `ocelli-compress quantize
    /// --layer-timings` chooses each layer's form from.
    ProfileLayers {
        config: PathBuf,
        /// The JSON table to write.
        #[arg(long)]
        out: PathBuf,
        /// Timed runs of each layer in each form, taking turns.
        #[arg(long, default_value_t = 15)]
        rounds: usize,
    },
    /// Print the JSON stream of a running Ocelli for a person.
    Tail {
        #[arg(default_value = "/run/ocelli/ocelli.sock")]
        socket: PathBuf,
        /// Stop after this many lines.
        #[arg(long)]
        lines: Option<usize>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ocelli: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match command {
        Command::Run { config } => {
            let summary = ocelli::service::serve(&config)?;
            eprintln!(
                "ocelli: {} frame(s), {} detection(s), {} bad frame(s)",
                summary.frames, summary.detections, summary.bad_frames
            );
            // A run to the end of its input reports dropped frames; a service told to stop
            // has done its job whatever it dropped on the way.
            Ok(
                if summary.bad_frames > 0 && !ocelli::service::stop_requested() {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                },
            )
        }
        Command::CheckConfig { config: path } => {
            let config = Config::load(&path)?;
            ocelli::service::check_models(&config)?;
            let budget = ocelli::limits::check_budget(&path, &config)?;
            println!(
                "{}: ok (board {}, source {}, {} detector(s){})",
                path.display(),
                config.board.name,
                config.source,
                config.detectors.len(),
                budget.map_or(String::new(), |e| format!(
                    ", about {} of {} MB",
                    e.total().div_ceil(1 << 20),
                    config.board.memory_mb.unwrap_or_default()
                ))
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect {
            model,
            input_size,
            trust,
        } => {
            use ocelli::update::bundle::{Bundle, Limits, read_public_key};
            if Bundle::looks_like(&model) {
                let trusted = trust
                    .iter()
                    .map(|p| read_public_key(p))
                    .collect::<Result<Vec<_>, _>>()?;
                print!("{}", Bundle::inspect(&model, &trusted, Limits::default())?);
                return Ok(ExitCode::SUCCESS);
            }
            let size = input_size.map(|v| [v[0], v[1]]);
            let (_, info) = load_plan(&model, size)?;
            println!("model:  {}", model.display());
            println!(
                "input:  {} {:?} (f32, NCHW)",
                info.input_name, info.input_shape
            );
            for o in &info.outputs {
                println!("output: {} {:?}", o.name, o.shape);
            }
            match &info.family {
                Ok((family, why)) => println!(
                    "family: {} ({why})",
                    serde_json::to_string(family)?.trim_matches('"')
                ),
                Err(why) => println!("family: not recognised ({why}); set `family` in the config"),
            }
            if let Some(card) = ocelli::model::card::Card::beside(&model)? {
                let bytes = ocelli::model::onnx::read_bytes(&model)?;
                card.check(&model, &ocelli::model::card::sha256_hex(&bytes))?;
                print!("{card}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ProfileLayers {
            config: path,
            out,
            rounds,
        } => {
            use ocelli::model::{layers, onnx::Model};
            let config = Config::load(&path)?;
            ocelli::service::use_board(&config.board);
            let models = config
                .detectors
                .iter()
                .map(|d| {
                    let m = Model::load(&config.resolve(&d.model))?;
                    let shape = m.input_shape(d.input_size)?;
                    Ok((m, shape))
                })
                .collect::<Result<Vec<_>, ocelli::model::onnx::ModelError>>()?;
            let table = layers::profile(&models, rounds, config.board.threads, |m| {
                eprintln!("ocelli: profile-layers: {m}")
            })?;
            let json = serde_json::to_string_pretty(&table)?;
            std::fs::write(&out, json + "\n")
                .map_err(|e| format!("{}: cannot write: {e}", out.display()))?;
            println!(
                "{}: {} layer shape(s) of {} model(s) timed on {}, {} thread(s)",
                out.display(),
                table.layers.len(),
                models.len(),
                table.cpu,
                table.threads
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Probe { devices } => {
            let found = ocelli::capture::probe(&mut std::io::stdout().lock(), &devices)?;
            if found == 0 {
                eprintln!("ocelli: no V4L2 capture device found");
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Record {
            config: path,
            out,
            frames,
            every,
        } => {
            ocelli::service::install_signal_handlers()?;
            let config = Config::load(&path)?;
            let timeout = std::time::Duration::from_secs_f64(config.reconnect.frame_timeout_s);
            let mut source = ocelli::capture::open(&config.source, timeout, |p| config.resolve(p))?;
            let summary = ocelli::capture::record(
                source.as_mut(),
                &out,
                ocelli::capture::RecordOptions { frames, every },
                ocelli::service::stop_requested,
                |m| eprintln!("{m}"),
            )?;
            eprintln!(
                "ocelli: {} frame(s) saved to {} (one in {every} of {} delivered, {} bad)",
                summary.saved,
                out.display(),
                summary.seen,
                summary.bad_frames
            );
            Ok(if summary.saved == 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Tail { socket, lines } => {
            ocelli::emit::tail(&socket, &mut std::io::stdout().lock(), lines)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
