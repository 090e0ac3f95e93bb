//! The `server` binary: `server serve` answers similarity queries over HTTP;
//! `server index` embeds a folder of images into an index directory.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use server::gallery::IndexKind;
use server::{indexer, serve, Settings};

#[derive(Parser)]
#[command(name = "server", version, about = "Image similarity search with a self-taught embedding")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve similarity search over HTTP.
    Serve(ServeArgs),
    /// Embed a folder of images (recursively) into an index directory, one item per file;
    /// resumable: a re-run skips files already indexed at their path and re-embeds changed ones.
    Index(IndexArgs),
    /// Search a running server: images from this machine, or more like a stored item.
    Search(SearchArgs),
    /// Exit 0 when the server of these settings (or --url) is ready to answer, else 1:
    /// the container image's health check (no curl needed).
    Health(HealthArgs),
}

/// Flags shared by both commands; each overrides the config file and `STML_SERVER_*`.
#[derive(Args)]
struct Common {
    /// The ONNX model written by `trainer export`.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Index directory (created when absent).
    #[arg(long)]
    index: Option<PathBuf>,
    /// TOML config file (see Settings for the keys).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long)]
    host: Option<String>,
    #[arg(long)]
    port: Option<u16>,
}

#[derive(Args)]
struct IndexArgs {
    #[command(flatten)]
    common: Common,
    /// Folder of images to index.
    #[arg(long)]
    images: PathBuf,
    /// Images per inference call.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Afterwards, remove the items of files under --images that are gone.
    #[arg(long)]
    sync: bool,
    /// Metadata by image: a CSV file (header row with a `path` column) or JSON Lines
    /// (`{"path": ..., ...}` a line); paths relative to --images, or absolute.
    #[arg(long)]
    metadata: Option<PathBuf>,
    /// Record each image's folder name as its `label` (filter with `label:NAME`).
    #[arg(long)]
    label_from_folder: bool,
    /// Index into this collection of the server's settings (declared in the config file
    /// or created through the API) instead of --index / --model. Stop the server first:
    /// an index is open in one process at a time.
    #[arg(long, conflicts_with_all = ["index", "model"])]
    collection: Option<String>,
    /// Index only part I of N of the folder (`--shard 2/4`; files are split by a hash of
    /// their path): N jobs, one per part, fill one Milvus collection in parallel. With
    /// --sync each job removes only its own part's gone files.
    #[arg(long, value_parser = parse_shard)]
    shard: Option<indexer::Shard>,
}

fn parse_shard(text: &str) -> Result<indexer::Shard, String> {
    indexer::Shard::parse(text).map_err(|e| e.to_string())
}

#[derive(Args)]
struct SearchArgs {
    /// Image files to search with (several go in one batch request).
    #[arg(required_unless_present = "id")]
    images: Vec<PathBuf>,
    /// Instead of images: more like this stored item (itself left out).
    #[arg(long, conflicts_with = "images")]
    id: Option<String>,
    /// The server.
    #[arg(long, env = "STML_SERVER_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Hits per query.
    #[arg(long, short, default_value_t = 10)]
    k: usize,
    /// Only items passing this filter, e.g. `label:shoe,year>2020` (or JSON).
    #[arg(long)]
    filter: Option<String>,
    /// Only hits at most this far away.
    #[arg(long)]
    max_distance: Option<f32>,
    /// Re-rank the nearest 50 by STML's contextual similarity (k-reciprocal neighbourhoods),
    /// with the server's defaults.
    #[arg(long)]
    rerank: bool,
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

#[derive(Args)]
struct HealthArgs {
    /// The server; default: the host and port of the settings (config file and
    /// `STML_SERVER_*`), a wildcard host reached on 127.0.0.1.
    #[arg(long)]
    url: Option<String>,
    /// TOML config file to take the host and port from.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3)]
    timeout: u64,
}

fn settings(common: &Common) -> anyhow::Result<Settings> {
    let mut s = Settings::load(common.config.as_deref(), std::env::vars())?;
    if let Some(m) = &common.model {
        s.model = m.clone();
    }
    if let Some(i) = &common.index {
        s.index_dir = i.clone();
    }
    Ok(s)
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ort=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve_command(args),
        Command::Index(args) => index_command(args),
        Command::Search(args) => search_command(args),
        Command::Health(args) => health_command(args),
    }
}

fn serve_command(args: ServeArgs) -> anyhow::Result<()> {
    let mut s = settings(&args.common)?;
    if let Some(h) = args.host {
        s.host = h;
    }
    if let Some(p) = args.port {
        s.port = p;
    }
    actix_web::rt::System::new().block_on(async move {
        let running = serve::start(s)?;
        tracing::info!("listening on {}://{}", running.scheme, running.addr);
        running.wait().await?;
        Ok(())
    })
}

fn index_command(args: IndexArgs) -> anyhow::Result<()> {
    let mut s = settings(&args.common)?;
    if let Some(name) = &args.collection {
        (s.index_dir, s.model) = server::collections::locate(&s, name)?;
    }
    anyhow::ensure!(
        args.images.is_dir(),
        "--images {} is not a folder; pass the folder of images to index",
        args.images.display()
    );
    anyhow::ensure!(args.batch_size > 0, "--batch-size 0 is not a batch size; pass 1 or more (default 32)");
    let model = serve::open_model(&s)?;
    let gallery = match &args.collection {
        Some(name) => {
            let (live, _) = server::upgrade::resolve(&s.index_dir)?;
            serve::open_collection_gallery(&s, name, &live, &model, IndexKind::Hnsw)?
        }
        None => serve::open_gallery(&s, &model, IndexKind::Hnsw)?,
    };
    let bar = contract::progress::bar(0, "index", "files");
    let opts = indexer::IndexOptions {
        batch: args.batch_size,
        max_pixels: s.max_image_pixels,
        sync: args.sync,
        metadata_file: args.metadata,
        label_from_folder: args.label_from_folder,
        shard: args.shard,
    };
    let report = indexer::index_folder(&model, gallery.as_ref(), &args.images, &opts, &mut |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
        bar.set_message(format!(
            "indexed {} updated {} skipped {} removed {} failed {}",
            p.indexed, p.updated, p.skipped, p.removed, p.failed
        ));
        tracing::debug!(done = p.done, total = p.total, indexed = p.indexed, updated = p.updated, "batch committed");
    })?;
    bar.finish();
    for (path, reason) in &report.failures {
        tracing::warn!("failed {}: {reason}", path.display());
    }
    if !report.unmatched_metadata.is_empty() {
        let shown: Vec<String> =
            report.unmatched_metadata.iter().take(5).map(|(line, p)| format!("line {line}: {p}")).collect();
        tracing::warn!(
            rows = report.unmatched_metadata.len(),
            "metadata rows name no image under the folder ({}{}); check their paths",
            shown.join(", "),
            if report.unmatched_metadata.len() > 5 { ", ..." } else { "" }
        );
    }
    let p = &report.progress;
    tracing::info!(
        indexed = p.indexed,
        updated = p.updated,
        skipped = p.skipped,
        removed = p.removed,
        failed = p.failed,
        seconds = report.seconds,
        images_per_second = (p.indexed + p.updated) as f64 / report.seconds.max(1e-9),
        "indexing done"
    );
    let st = &report.stages;
    tracing::info!(
        read_s = st.read,
        decode_s = st.decode,
        embed_s = st.embed,
        commit_s = st.commit,
        "busy seconds per stage (the largest sets the pace)"
    );
    gallery.snapshot()?;
    Ok(())
}

fn health_command(args: HealthArgs) -> anyhow::Result<()> {
    let url = match args.url {
        Some(u) => u,
        None => {
            let s = Settings::load(args.config.as_deref(), std::env::vars())?;
            server::client::local_url(&s.host, s.port)
        }
    };
    server::client::ready(&url, std::time::Duration::from_secs(args.timeout.max(1)))?;
    println!("{url}: ready");
    Ok(())
}

fn search_command(args: SearchArgs) -> anyhow::Result<()> {
    use server::client::{table, Request, Target};
    let target = match args.id {
        Some(id) => Target::Item(id),
        None => Target::Images(args.images.clone()),
    };
    let request = Request {
        url: args.url,
        target,
        k: args.k,
        filter: args.filter,
        max_distance: args.max_distance,
        rerank: args.rerank,
        timeout: std::time::Duration::from_secs(args.timeout.max(1)),
    };
    let results = request.send()?;
    if args.json {
        let out = if results.len() == 1 { results[0].clone() } else { serde_json::json!({ "results": results }) };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let names: Vec<String> = match &request.target {
        Target::Images(paths) => paths.iter().map(|p| p.display().to_string()).collect(),
        Target::Item(id) => vec![format!("item {id}")],
    };
    for (name, result) in names.iter().zip(&results) {
        println!("{name}");
        for line in table(result) {
            println!("{line}");
        }
    }
    Ok(())
}
