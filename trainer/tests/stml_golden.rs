//! Golden tests: every STML part against the independent float64 PyTorch reference in
//! `tests/golden/gen_golden.py` (regenerate with
//! `.venv/bin/python trainer/tests/golden/gen_golden.py`), within 1e-5.

use std::collections::HashMap;
use std::path::PathBuf;

use tch::{Kind, Tensor};
use trainer::optim::{cosine_lr, Algorithm, Optimizer, OptimizerConfig, ParamGroup};
use trainer::stml::loss::{relaxed_contrastive, self_distillation, stml_loss};
use trainer::stml::similarity::{contextual_similarity, l2_normalize, pairwise_similarity, pseudo_labels};

const TOL: f64 = 1e-5;

struct Golden(HashMap<String, Tensor>);

impl Golden {
    fn load(file: &str) -> Self {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(file);
        let tensors = Tensor::read_safetensors(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        Self(tensors.into_iter().collect())
    }

    fn get(&self, name: &str) -> &Tensor {
        self.0.get(name).unwrap_or_else(|| panic!("golden tensor {name} missing; rerun gen_golden.py"))
    }

    fn f64(&self, name: &str) -> f64 {
        self.get(name).to_kind(Kind::Double).reshape([-1]).double_value(&[0])
    }

    fn i64(&self, name: &str) -> i64 {
        self.get(name).reshape([-1]).int64_value(&[0])
    }

    /// Case prefixes: the part of each name before the first '.', for names with `suffix`.
    fn cases(&self, suffix: &str) -> Vec<String> {
        let mut cases: Vec<String> = self
            .0
            .keys()
            .filter_map(|k| k.strip_suffix(suffix).map(str::to_string))
            .filter(|c| !c.contains('.'))
            .collect();
        cases.sort();
        cases
    }
}

#[track_caller]
fn assert_close(what: &str, actual: &Tensor, expected: &Tensor) {
    assert_eq!(actual.size(), expected.size(), "{what}: shape");
    let diff = (actual.to_kind(Kind::Double) - expected.to_kind(Kind::Double)).abs().max().double_value(&[]);
    assert!(diff <= TOL, "{what}: max |actual - expected| = {diff:e} > {TOL:e}");
}

#[track_caller]
fn assert_scalar_close(what: &str, actual: &Tensor, expected: f64) {
    let a = actual.to_kind(Kind::Double).double_value(&[]);
    assert!((a - expected).abs() <= TOL, "{what}: {a} vs reference {expected}");
}

#[test]
fn pairwise_contextual_and_final_similarity_match_reference() {
    let g = Golden::load("similarity.safetensors");
    let cases = g.cases(".w_c");
    assert!(cases.len() >= 7, "expected the 7 similarity cases, found {cases:?}");
    for case in cases {
        let n = |s: &str| format!("{case}.{s}");
        let (idx, sigma, k) = (g.get(&n("idx")), g.f64(&n("sigma")), g.i64(&n("k")));
        assert_close(&n("t"), &l2_normalize(g.get(&n("teacher"))), g.get(&n("t")));
        assert_close(&n("w_p"), &pairwise_similarity(g.get(&n("t")), sigma), g.get(&n("w_p")));
        // From the reference W_P, so that this compares only steps 2-7.
        assert_close(&n("w_c"), &contextual_similarity(g.get(&n("w_p")), idx, k), g.get(&n("w_c")));
        assert_close(&n("w"), &pseudo_labels(g.get(&n("teacher")), idx, sigma, k), g.get(&n("w")));
        // Training runs in f32: the same labels within tolerance.
        let w32 = pseudo_labels(&g.get(&n("teacher")).to_kind(Kind::Float), idx, sigma, k);
        assert_eq!(w32.kind(), Kind::Float);
        assert_close(&format!("{case}.w (f32)"), &w32, g.get(&n("w")));
    }
}

/// The server's plain-Rust contextual similarity (`contract::contextual`, for re-ranking)
/// gives the reference's numbers too.
#[test]
fn the_servers_contextual_similarity_matches_reference() {
    let g = Golden::load("similarity.safetensors");
    let rows = |t: &Tensor| -> Vec<Vec<f64>> { Vec::<Vec<f64>>::try_from(t.to_kind(Kind::Double)).unwrap() };
    let flat = |t: &Tensor| -> Vec<f64> { Vec::<f64>::try_from(t.to_kind(Kind::Double).reshape([-1])).unwrap() };
    for case in g.cases(".w_c") {
        let n = |s: &str| format!("{case}.{s}");
        let (sigma, k) = (g.f64(&n("sigma")), g.i64(&n("k")) as usize);
        let group: Vec<usize> =
            Vec::<i64>::try_from(g.get(&n("idx")).reshape([-1])).unwrap().into_iter().map(|i| i as usize).collect();
        let close = |what: &str, a: &[f64], b: &[f64]| {
            assert_eq!(a.len(), b.len(), "{case}.{what}: size");
            let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
            assert!(diff <= TOL, "{case}.{what}: max |contract - reference| = {diff:e}");
        };
        let w_p = contract::contextual::pairwise_similarity(&rows(g.get(&n("t"))), sigma);
        close("w_p", &w_p, &flat(g.get(&n("w_p"))));
        let w_c = contract::contextual::contextual_similarity(&flat(g.get(&n("w_p"))), &group, k);
        close("w_c", &w_c, &flat(g.get(&n("w_c"))));
    }
}

#[test]
fn losses_and_gradients_match_reference() {
    let g = Golden::load("loss.safetensors");
    let cases = g.cases(".total");
    assert_eq!(cases.len(), 2, "expected 2 loss cases, found {cases:?}");
    for case in cases {
        let n = |s: &str| format!("{case}.{s}");
        let f = g.get(&n("f")).copy().set_requires_grad(true);
        let emb_g = g.get(&n("g")).copy().set_requires_grad(true);
        let (w, delta) = (g.get(&n("w")), g.f64(&n("delta")));

        assert_scalar_close(&n("rc_f"), &relaxed_contrastive(&f, w, delta), g.f64(&n("rc_f")));
        assert_scalar_close(&n("rc_g"), &relaxed_contrastive(&emb_g, w, delta), g.f64(&n("rc_g")));
        assert_scalar_close(&n("kl"), &self_distillation(&f, &emb_g), g.f64(&n("kl")));

        let parts = stml_loss(&f, &emb_g, w, None, delta);
        assert_scalar_close(&n("rc_f"), &parts.rc_f, g.f64(&n("rc_f")));
        assert_scalar_close(&n("rc_g"), &parts.rc_g, g.f64(&n("rc_g")));
        assert_scalar_close(&n("kl"), &parts.kl, g.f64(&n("kl")));
        assert_scalar_close(&n("total"), &parts.total, g.f64(&n("total")));

        parts.total.backward();
        assert_close(&n("grad_f"), &f.grad(), g.get(&n("grad_f")));
        // g gets gradient from RC only: KL's target is detached.
        assert_close(&n("grad_g"), &emb_g.grad(), g.get(&n("grad_g")));
    }
}

const PARAMS: [(&str, usize); 4] = [("conv", 0), ("bias", 0), ("layer", 1), ("linear", 1)];

/// Runs two steps of `config` on the golden parameters with the golden gradients and
/// compares the parameters after each step with `{tag}.step{1,2}.{name}.param`.
fn check_optimizer(g: &Golden, config: OptimizerConfig, tag: &str) {
    let lrs = Vec::<f64>::try_from(g.get("group_lr")).expect("group_lr");
    let params: Vec<(String, Tensor)> = PARAMS
        .iter()
        .map(|(name, _)| (name.to_string(), g.get(&format!("init.{name}")).copy().set_requires_grad(true)))
        .collect();
    let groups = (0..2)
        .map(|group| ParamGroup {
            lr: lrs[group],
            params: PARAMS
                .iter()
                .zip(&params)
                .filter(|((_, gr), _)| *gr == group)
                .map(|(_, (name, t))| (name.clone(), t.shallow_clone()))
                .collect(),
        })
        .collect();
    let mut opt = Optimizer::new(config, groups).expect("optimizer");
    for step in 1..=2 {
        opt.zero_grad();
        // d(sum(p * grad))/dp = grad: installs the golden gradient through autograd.
        let loss = params
            .iter()
            .map(|(name, p)| (p * g.get(&format!("adamp_nesterov.step{step}.{name}.grad"))).sum(Kind::Double))
            .fold(Tensor::from(0.0), |acc, x| acc + x);
        loss.backward();
        opt.step();
        for (name, p) in &params {
            let key = format!("{tag}.step{step}.{name}.param");
            assert_close(&key, p, g.get(&key));
        }
    }
    assert_eq!(opt.step_count(), 2);
}

#[test]
fn adamp_steps_match_reference_with_and_without_projection() {
    let g = Golden::load("optim.safetensors");
    check_optimizer(&g, OptimizerConfig::default(), "adamp_nesterov");
    check_optimizer(&g, OptimizerConfig { nesterov: false, ..OptimizerConfig::default() }, "adamp");
}

#[test]
fn adamw_and_sgd_steps_match_torch_optim() {
    let g = Golden::load("optim.safetensors");
    let adamw = OptimizerConfig { algorithm: Algorithm::AdamW, ..OptimizerConfig::default() };
    check_optimizer(&g, adamw, "adamw");
    let sgd = OptimizerConfig { algorithm: Algorithm::Sgd, nesterov: false, ..OptimizerConfig::default() };
    check_optimizer(&g, sgd.clone(), "sgd");
    check_optimizer(&g, OptimizerConfig { nesterov: true, ..sgd }, "sgd_nesterov");
}

#[test]
fn cosine_schedule_matches_torch_scheduler() {
    let g = Golden::load("optim.safetensors");
    for tag in ["cos_t5", "cos_t10"] {
        let p = Vec::<f64>::try_from(g.get(&format!("{tag}.params"))).expect("params");
        let expected = Vec::<f64>::try_from(g.get(&format!("{tag}.lr"))).expect("lrs");
        let (base, total, eta_min) = (p[0], p[1] as usize, p[2]);
        assert_eq!(expected.len(), total + 1);
        for (epoch, want) in expected.iter().enumerate() {
            let got = cosine_lr(base, epoch, total, eta_min);
            assert!((got - want).abs() <= 1e-12 * base.max(1.0), "{tag} epoch {epoch}: {got} vs {want}");
        }
    }
}
