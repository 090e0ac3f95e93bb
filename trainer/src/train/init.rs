//! Starting the heads where the pretrained feature is (`--head-init pca`, the product's
//! default; docs/algorithm.md, "Departures from the paper").
//!
//! The paper starts `f` and `g` as random orthogonal maps of the pooled feature, so `f`
//! begins several points of Recall@1 below the pooled feature it is computed from and a
//! short schedule spends its first epochs catching up. Here both heads start as the
//! leading principal components of the pretrained pooled features of the training images
//! (rows orthonormal, like the orthogonal initialisation, and a bias that centres them):
//! distances in `f` and `g` are those of the pooled feature, projected, from the first step.

use models::net::Network;
use tch::{Device, Kind, Tensor};

use crate::error::{Result, TrainError};

/// Principal components of a set of feature vectors.
pub struct Pca {
    /// `[D]` mean feature.
    pub mean: Tensor,
    /// `[D, D]` unit components as rows, by decreasing variance.
    pub components: Tensor,
    /// `[D]` variance along each component, decreasing.
    pub variances: Tensor,
}

impl Pca {
    /// Fits the components of `x` (computed in float64 on the CPU).
    ///
    /// # Shapes
    /// - `x`: `[N, D]` features, one row per image
    pub fn fit(x: &Tensor) -> Pca {
        tch::no_grad(|| {
            let x = x.to_device(Device::Cpu).to_kind(Kind::Double);
            let n = x.size()[0].max(2);
            let mean = x.mean_dim(0, false, None); // [D]
            let xc = &x - &mean;
            let cov = xc.tr().matmul(&xc) / (n - 1) as f64; // [D, D]
            let (values, vectors) = cov.linalg_eigh("L"); // ascending
            let values = values.flip([0]);
            let components = vectors.flip([1]).tr().contiguous(); // [D, D], rows by decreasing variance
            Pca { mean, components, variances: values.clamp_min(0.0) }
        })
    }

    /// The linear map onto the first `dim` components: `(weight [dim, D], bias [dim])`
    /// with `y = weight x + bias` centred. Rows past the feature dimension are zero.
    pub fn projection(&self, dim: usize) -> (Tensor, Tensor) {
        let d = self.components.size()[0];
        let take = (dim as i64).min(d);
        let mut w = self.components.narrow(0, 0, take);
        if (dim as i64) > d {
            w = Tensor::cat(&[w, Tensor::zeros([dim as i64 - d, d], (Kind::Double, Device::Cpu))], 0);
        }
        let b = -w.matmul(&self.mean);
        (w, b)
    }
}

/// Sets linear head `head` of `net` (parameters `{head}.weight`, `{head}.bias`) to the
/// projection onto the leading components of `pca`.
pub fn init_head(net: &Network, head: &str, pca: &Pca) -> Result<()> {
    let param = |suffix: &str| {
        let name = format!("{head}.{suffix}");
        net.param(&name)
            .map(Tensor::shallow_clone)
            .ok_or_else(|| TrainError::MissingOutput { name, what: "a head parameter to initialise".into() })
    };
    let mut w = param("weight")?;
    let mut b = param("bias")?;
    let (out, inp) = (w.size()[0], w.size()[1]);
    if inp != pca.components.size()[0] {
        return Err(TrainError::Config(format!(
            "{head} reads {inp} features but the pooled feature has {}; use --head-init orthogonal",
            pca.components.size()[0]
        )));
    }
    let (pw, pb) = pca.projection(out as usize);
    tch::no_grad(|| {
        w.copy_(&pw.to_kind(w.kind()).to_device(w.device()));
        b.copy_(&pb.to_kind(b.kind()).to_device(b.device()));
    });
    Ok(())
}

/// A head applied to features outside the network: `x W^T + b`, L2-normalised if asked.
///
/// # Shapes
/// - `x`: `[N, D]`; returns `[N, out]`
pub fn apply_head(net: &Network, head: &str, x: &Tensor, normalize: bool) -> Result<Tensor> {
    let get = |suffix: &str| {
        let name = format!("{head}.{suffix}");
        net.param(&name).ok_or_else(|| TrainError::MissingOutput { name, what: "a head parameter".into() })
    };
    let (w, b) = (get("weight")?, get("bias")?);
    let y = tch::no_grad(|| x.to_device(w.device()).to_kind(w.kind()).matmul(&w.tr()) + b);
    Ok(if normalize { crate::stml::similarity::l2_normalize(&y) } else { y })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_orthonormal_and_sorted_and_the_projection_centres() {
        tch::manual_seed(3);
        // Anisotropic data: variances 9, 4, 1, 0.25 along the axes, mean (5, -2, 1, 0).
        let scale = Tensor::from_slice(&[3.0f64, 2.0, 1.0, 0.5]);
        let mean = Tensor::from_slice(&[5.0f64, -2.0, 1.0, 0.0]);
        let x = Tensor::randn([4000, 4], (Kind::Double, Device::Cpu)) * &scale + &mean;
        let pca = Pca::fit(&x);
        let v: Vec<f64> = Vec::try_from(&pca.variances).unwrap();
        for (got, want) in v.iter().zip([9.0, 4.0, 1.0, 0.25]) {
            assert!((got - want).abs() < 0.1 * want, "{v:?}");
        }
        let gram = pca.components.matmul(&pca.components.tr());
        assert!(gram.allclose(&Tensor::eye(4, (Kind::Double, Device::Cpu)), 1e-9, 1e-9, false));
        let (w, b) = pca.projection(2);
        let y = x.matmul(&w.tr()) + b; // [4000, 2]
        let m: Vec<f64> = Vec::try_from(y.mean_dim(0, false, None)).unwrap();
        assert!(m.iter().all(|c| c.abs() < 1e-9), "{m:?}");
        // The first component is the x axis (largest variance), up to sign.
        let first: Vec<f64> = Vec::try_from(w.get(0)).unwrap();
        assert!(first[0].abs() > 0.99, "{first:?}");
        // More rows than features: the extra rows are zero.
        let (w6, _) = pca.projection(6);
        assert_eq!(w6.size(), [6, 4]);
        assert_eq!(w6.narrow(0, 4, 2).abs().sum(Kind::Double).double_value(&[]), 0.0);
    }
}
