//! Embedding a whole dataset with one head of a network, in batches, with a progress bar.

use std::sync::Arc;

use contract::{Output, Preprocess};
use indicatif::ProgressBar;
use models::net::Network;
use tch::{Device, Kind, Tensor};

use crate::data::{sequential_batches, Dataset, ImageCache, Loader, LoaderOptions, Transform};
use crate::error::Result;

/// Embeddings of a dataset, in dataset order. Rows of images that could not be decoded
/// are left out; `kept` says which dataset indices the rows belong to.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// `[kept.len(), dim]` row-major.
    pub vectors: Vec<f32>,
    pub dim: usize,
    pub kept: Vec<usize>,
    pub skipped: usize,
}

/// Options for [`embed`].
pub struct EmbedOptions<'a> {
    pub output: Output,
    pub transform: Transform,
    pub batch_size: usize,
    pub threads: usize,
    pub device: Device,
    pub cache: Option<Arc<ImageCache>>,
    /// Progress bar label; `None` hides the bar.
    pub label: Option<&'a str>,
}

/// Runs `net` in eval mode over every image of `dataset` and collects output `output`.
///
/// # Shapes
/// - returns `vectors` `[kept, dim]` with `dim` the output's width.
pub fn embed(net: &Network, dataset: &Arc<Dataset>, opts: &EmbedOptions<'_>) -> Result<Embedded> {
    let mut all = embed_many(net, dataset, opts, &[opts.output])?;
    Ok(all.remove(0))
}

/// Like [`embed`], collecting several outputs of one forward pass (`opts.output` is
/// ignored): one [`Embedded`] per name in `outputs`, in that order.
pub fn embed_many(
    net: &Network,
    dataset: &Arc<Dataset>,
    opts: &EmbedOptions<'_>,
    outputs: &[Output],
) -> Result<Vec<Embedded>> {
    let batches = sequential_batches(dataset.len(), opts.batch_size);
    let mut loader = Loader::new(
        dataset.clone(),
        batches,
        opts.transform.clone(),
        LoaderOptions { views: 1, threads: opts.threads, prefetch: 2, cache: opts.cache.clone(), ..Default::default() },
    )?;
    let pb = match opts.label {
        Some(l) => contract::progress::bar(dataset.len() as u64, l, "img"),
        None => ProgressBar::hidden(),
    };
    let mut vectors = vec![Vec::new(); outputs.len()];
    let mut dims = vec![0; outputs.len()];
    let mut kept = Vec::with_capacity(dataset.len());
    for batch in loader.by_ref() {
        let s = batch.size as i64;
        let x = Tensor::from_slice(&batch.data).view([batch.rows as i64, 3, s, s]).to_device(opts.device);
        let out = tch::no_grad(|| net.forward(&x, false))?;
        for (o, &name) in outputs.iter().enumerate() {
            let y = out.get(name)?.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
            dims[o] = y.size()[1] as usize;
            vectors[o].extend(Vec::<f32>::try_from(y.view(-1))?);
        }
        kept.extend(batch.idx.iter().map(|&i| i as usize));
        pb.inc((batch.images + batch.skipped.len()) as u64);
    }
    pb.finish_and_clear();
    let skipped = loader.skipped();
    Ok(vectors
        .into_iter()
        .zip(dims)
        .map(|(vectors, dim)| Embedded { vectors, dim, kept: kept.clone(), skipped })
        .collect())
}

impl Embedded {
    /// The rows as a `[kept, dim]` tensor on `device`.
    pub fn tensor(&self, device: Device) -> Tensor {
        Tensor::from_slice(&self.vectors).view([self.kept.len() as i64, self.dim as i64]).to_device(device)
    }

    /// Rows from a `[kept, dim]` tensor, for the same images as `self`.
    pub fn with_rows(&self, t: &Tensor) -> Result<Embedded> {
        let t = t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
        let dim = t.size()[1] as usize;
        Ok(Embedded { vectors: Vec::<f32>::try_from(t.view(-1))?, dim, kept: self.kept.clone(), skipped: self.skipped })
    }
}

/// Embeds a dataset with the evaluation transform (resize, centre crop, normalise) in
/// batches of 128: what evaluation, reports and `trainer eval` all do.
pub fn embed_eval(
    net: &Network,
    dataset: &Arc<Dataset>,
    preprocess: &Preprocess,
    output: Output,
    threads: usize,
    device: Device,
    label: Option<&str>,
) -> Result<Embedded> {
    embed(
        net,
        dataset,
        &EmbedOptions {
            output,
            transform: Transform::eval(preprocess),
            batch_size: 128,
            threads,
            device,
            cache: None,
            label,
        },
    )
}
