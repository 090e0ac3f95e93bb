//! Property tests of the STML parts on small random inputs: pseudo labels are symmetric
//! and in [0, 1], losses are non-negative with finite gradients, the EMA's end points are
//! exact, the sampler's batches have the promised structure, and optimizer state
//! round-trips.

use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{nn, Device, Kind, Tensor};
use trainer::optim::{Optimizer, OptimizerConfig, ParamGroup};
use trainer::stml::ema::EmaPairs;
use trainer::stml::loss::{relaxed_contrastive, stml_loss, weighted_relaxed_contrastive};
use trainer::stml::sampler::{epoch_batches, known_positives_first, nearest_neighbors, nearest_neighbors_in_chunks};
use trainer::stml::similarity::{
    known_pair_weights, l2_normalize, pairwise_similarity, pseudo_labels, with_known_labels,
};
use trainer::stml::{copy_into, momentum_update};

fn config() -> ProptestConfig {
    ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() }
}

fn matrix(values: &[f64], rows: i64) -> Tensor {
    Tensor::from_slice(values).reshape([rows, -1]).to_kind(Kind::Float)
}

/// `n` seeded random points in 3-d, the sampler tests' embedding.
fn random_points(n: usize, seed: u64) -> Tensor {
    tch::manual_seed(seed as i64);
    Tensor::randn([n as i64, 3], (Kind::Float, Device::Cpu))
}

/// A batch of `images` images seen twice, in the sampler's order: idx = [0..B, 0..B].
fn two_view_idx(images: i64) -> Tensor {
    Tensor::arange(images, (Kind::Int64, Device::Cpu)).repeat([2])
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn pseudo_labels_are_symmetric_and_in_unit_interval(
        images in 2i64..9,
        neighbors in 1i64..4,
        values in prop::collection::vec(-3.0f64..3.0, 18 * 6),
    ) {
        let n = 2 * images;
        let teacher = matrix(&values[..(n * 6) as usize], n);
        let w = pseudo_labels(&teacher, &two_view_idx(images), 3.0, neighbors * 2);
        prop_assert_eq!(w.size(), vec![n, n]);
        let asym = (&w - w.tr()).abs().max().double_value(&[]);
        prop_assert!(asym == 0.0, "W not symmetric: {}", asym);
        prop_assert!(w.min().double_value(&[]) >= 0.0);
        prop_assert!(w.max().double_value(&[]) <= 1.0);
        if neighbors == 1 {
            // k = 2: each sample's neighbourhood is exactly its two views, so W_C is the
            // same-image indicator.
            let idx = two_view_idx(images);
            let same = idx.unsqueeze(1).eq_tensor(&idx.unsqueeze(0)).to_kind(Kind::Float);
            let w_p = pairwise_similarity(&l2_normalize(&teacher), 3.0);
            let expected = (w_p + same) * 0.5;
            prop_assert!(w.allclose(&expected, 1e-6, 1e-6, false));
        }
    }

    #[test]
    fn losses_are_non_negative_with_finite_gradients(
        images in 2i64..7,
        values in prop::collection::vec(-2.0f64..2.0, 12 * (4 + 5 + 6)),
        duplicate in any::<bool>(),
    ) {
        let n = 2 * images;
        let take = |from: usize, cols: usize| matrix(&values[from..from + n as usize * cols], n);
        let teacher = take(0, 4);
        let mut f = take(12 * 4, 5);
        let g = take(12 * 9, 6).set_requires_grad(true);
        if duplicate {
            // Identical rows: zero off-diagonal distances must not give NaN gradients.
            let row = f.get(0);
            f = Tensor::cat(&[row.unsqueeze(0), row.unsqueeze(0), f.narrow(0, 2, n - 2)], 0);
        }
        let f = f.set_requires_grad(true);
        let w = pseudo_labels(&teacher, &two_view_idx(images), 3.0, 4);
        let parts = stml_loss(&f, &g, &w, None, 1.0);
        for (name, v) in ["total", "rc_f", "rc_g", "kl"].iter().zip(parts.values()) {
            prop_assert!(v.is_finite() && v >= -1e-7, "{} = {}", name, v);
        }
        parts.total.backward();
        for (name, t) in [("f", &f), ("g", &g)] {
            let grad = t.grad();
            prop_assert!(grad.isfinite().all().int64_value(&[]) == 1, "non-finite gradient in {}", name);
        }
    }

    #[test]
    fn ema_end_points_are_exact(seed in any::<u64>()) {
        tch::manual_seed(seed as i64);
        let (teacher, student) = (networks(), networks());
        let before = snapshot(&teacher.0);

        momentum_update(&teacher.0, &student.0, 1.0).unwrap();
        prop_assert!(same(&snapshot(&teacher.0), &before), "m = 1 changed the teacher");

        let pairs = EmaPairs::new(&teacher.0, &student.0).unwrap();
        pairs.momentum_update(0.5);
        prop_assert!(!same(&snapshot(&teacher.0), &before), "m = 0.5 left the teacher unchanged");

        pairs.momentum_update(0.0);
        let student_now = snapshot(&student.0);
        for (name, t) in snapshot(&teacher.0) {
            let s = &student_now.iter().find(|(n, _)| *n == name).unwrap().1;
            prop_assert!(t.equal(s), "m = 0 did not copy {}", name);
        }
    }

    #[test]
    fn sampler_batches_have_the_promised_structure(
        n in 10usize..60,
        k in 1usize..5,
        queries in 1usize..4,
        seed in any::<u64>(),
    ) {
        let emb = random_points(n, seed);
        let knn = nearest_neighbors_in_chunks(&emb, k, 7).unwrap();
        prop_assert_eq!(&knn, &nearest_neighbors(&emb, k).unwrap());
        let batch = k * queries;
        let batches = epoch_batches(&knn, batch, k, &mut ChaCha8Rng::seed_from_u64(seed));
        prop_assert_eq!(batches.len(), n / batch);
        for b in &batches {
            prop_assert_eq!(b.len(), batch);
            let groups: Vec<&[usize]> = b.chunks(k).collect();
            let mut heads: Vec<usize> = groups.iter().map(|g| g[0]).collect();
            for g in &groups {
                prop_assert_eq!(*g, &knn[g[0]][..k], "a query is followed by its own neighbours");
            }
            heads.sort_unstable();
            heads.dedup();
            prop_assert_eq!(heads.len(), queries, "queries are distinct within a batch");
        }
        let again = epoch_batches(&knn, batch, k, &mut ChaCha8Rng::seed_from_u64(seed));
        prop_assert_eq!(&batches, &again, "same seed, same batches");
    }

    #[test]
    fn label_weight_reweights_only_the_pairs_of_known_class(
        images in 2i64..7,
        weight in 0.1f64..10.0,
        values in prop::collection::vec(-3.0f64..3.0, 12 * 4),
        known in prop::collection::vec(-1i64..3, 12),
    ) {
        let n = 2 * images;
        let e = matrix(&values[..(n * 4) as usize], n);
        let labels = Tensor::from_slice(&known[..n as usize]);
        let w = with_known_labels(&pseudo_labels(&e, &two_view_idx(images), 3.0, 2), &labels);
        let ones = Tensor::ones([n, n], (Kind::Float, Device::Cpu));
        let plain = relaxed_contrastive(&e, &w, 1.0).double_value(&[]);
        let equal = weighted_relaxed_contrastive(&e, &w, &(&ones * 2.5), 1.0).double_value(&[]);
        prop_assert!((plain - equal).abs() <= 1e-5 * plain.abs().max(1.0), "equal weights: {} vs {}", equal, plain);

        // By hand: the pairs of two known classes count `weight` times, the mean is over
        // the weights (the diagonal left out).
        let a = known_pair_weights(&labels, weight, Kind::Float);
        let weighted = weighted_relaxed_contrastive(&e, &w, &a, 1.0).double_value(&[]);
        let d = trainer::stml::loss::normalized_distances(&e);
        let (mut num, mut den) = (0.0, 0.0);
        for i in 0..n {
            for j in (0..n).filter(|&j| j != i) {
                let (wij, dij) = (w.double_value(&[i, j]), d.double_value(&[i, j]));
                let aij = if known[i as usize] >= 0 && known[j as usize] >= 0 { weight } else { 1.0 };
                prop_assert_eq!(a.double_value(&[i, j]), aij as f32 as f64);
                num += aij * (wij * dij * dij + (1.0 - wij) * (1.0 - dij).max(0.0).powi(2));
                den += aij;
            }
        }
        prop_assert!((weighted - num / den).abs() <= 1e-4 * (num / den).abs().max(1.0), "{} vs {}", weighted, num / den);
    }

    #[test]
    fn known_classes_put_their_own_members_first(
        n in 10usize..60,
        k in 1usize..6,
        classes in 1i64..6,
        seed in any::<u64>(),
    ) {
        let emb = random_points(n, seed);
        let mut knn = nearest_neighbors(&emb, k).unwrap();
        // Every third image is unknown; image 1 was left out of the embedding (no list).
        let labels: Vec<i64> = (0..n as i64).map(|i| if i % 3 == 2 { -1 } else { i % classes }).collect();
        knn[1].clear();
        for list in &mut knn {
            list.retain(|&j| j != 1);
        }
        let lists = known_positives_first(&knn, &labels, k, &mut ChaCha8Rng::seed_from_u64(seed));
        prop_assert_eq!(lists.len(), n);
        for (i, list) in lists.iter().enumerate() {
            if labels[i] < 0 || knn[i].is_empty() {
                prop_assert_eq!(list, &knn[i], "unknown classes keep their own neighbours");
                continue;
            }
            prop_assert_eq!(list[0], i, "the image itself first");
            let same: Vec<usize> = (0..n).filter(|&j| j != i && j != 1 && labels[j] == labels[i]).collect();
            let peers = (k - 1).min(same.len());
            let rest = knn[i].iter().filter(|j| **j != i && !list[1..=peers].contains(j)).count();
            prop_assert_eq!(list.len(), (1 + peers + rest).min(k.max(knn[i].len())));
            let mut seen = list.clone();
            seen.sort_unstable();
            seen.dedup();
            prop_assert_eq!(seen.len(), list.len(), "no image twice");
            prop_assert!(!list.contains(&1), "an image without a list is never chosen");
            prop_assert!(list[1..=peers].iter().all(|j| same.contains(j)), "known peers first: {:?}", list);
            prop_assert!(list[1 + peers..].iter().all(|j| knn[i].contains(j)), "then its own neighbours");
        }
        let again = known_positives_first(&knn, &labels, k, &mut ChaCha8Rng::seed_from_u64(seed));
        prop_assert_eq!(&lists, &again, "same seed, same lists");
    }
}

/// A tiny "student" (backbone + two heads) and the names a teacher would share.
struct Net(nn::VarStore);

fn networks() -> Net {
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let _ = root.sub("backbone").sub("conv").randn_standard("weight", &[4, 3, 3, 3]);
    let _ = root.sub("backbone").sub("bn").randn_standard("running_mean", &[4]).set_requires_grad(false);
    let _ = root.sub("head_g").randn_standard("weight", &[6, 4]);
    Net(vs)
}

fn snapshot(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(n, t)| (n, t.copy())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn same(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|((na, ta), (nb, tb))| na == nb && ta.equal(tb))
}

#[test]
fn teacher_names_must_exist_in_student_and_copy_is_exact() {
    let student = networks();
    let _ = student.0.root().sub("head_f").randn_standard("weight", &[3, 4]);
    let teacher = networks();
    copy_into(&teacher.0, &student.0).unwrap();
    for (name, t) in snapshot(&teacher.0) {
        assert!(t.equal(&student.0.variables()[&name]), "{name} not copied");
    }
    // The student as teacher: head_f has no counterpart in the smaller network.
    let err = EmaPairs::new(&student.0, &teacher.0).unwrap_err().to_string();
    assert!(err.contains("head_f"), "{err}");
}

#[test]
fn nearest_neighbors_start_with_self_even_for_duplicates() {
    let emb = Tensor::from_slice(&[0.0f32, 0.0, 0.0, 0.0, 5.0, 5.0, 0.1, 0.0]).reshape([4, 2]);
    let knn = nearest_neighbors(&emb, 3).unwrap();
    assert_eq!(knn[0], vec![0, 1, 3]);
    assert_eq!(knn[1], vec![1, 0, 3]);
    assert_eq!(knn[2][0], 2);
    assert_eq!(knn[3][0], 3);
    assert!(knn[3][1..].contains(&0) && knn[3][1..].contains(&1));
}

#[test]
fn optimizer_state_round_trips_and_resumes_identically() {
    let make = || {
        tch::manual_seed(7);
        let w = Tensor::randn([4, 3, 2, 2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let b = Tensor::randn([4], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        (w, b)
    };
    let step = |opt: &mut Optimizer, w: &Tensor, b: &Tensor, i: i64| {
        opt.zero_grad();
        let target = Tensor::full([4, 3, 2, 2], i as f64 * 0.1, (Kind::Float, Device::Cpu));
        ((w - target).square().sum(Kind::Float) + b.square().sum(Kind::Float)).backward();
        opt.step();
    };
    let groups = |w: &Tensor, b: &Tensor| {
        vec![
            ParamGroup { lr: 1e-2, params: vec![("w".into(), w.shallow_clone())] },
            ParamGroup { lr: 1e-3, params: vec![("b".into(), b.shallow_clone())] },
        ]
    };
    // Reference: four uninterrupted steps.
    let (w1, b1) = make();
    let mut a = Optimizer::new(OptimizerConfig::default(), groups(&w1, &b1)).unwrap();
    (0..4).for_each(|i| step(&mut a, &w1, &b1, i));

    // Two steps, save, restore into a fresh optimizer over copied parameters, two more.
    let (w2, b2) = make();
    let mut b_opt = Optimizer::new(OptimizerConfig::default(), groups(&w2, &b2)).unwrap();
    (0..2).for_each(|i| step(&mut b_opt, &w2, &b2, i));
    b_opt.set_lr(1, 5e-4).unwrap();
    let saved: Vec<(String, Tensor)> = b_opt.state_tensors().into_iter().map(|(n, t)| (n, t.copy())).collect();
    let (w3, b3) = (w2.detach().copy().set_requires_grad(true), b2.detach().copy().set_requires_grad(true));
    let mut c = Optimizer::new(OptimizerConfig::default(), groups(&w3, &b3)).unwrap();
    c.load_state(&saved).unwrap();
    assert_eq!(c.step_count(), 2);
    assert_eq!(c.lr(1), Some(5e-4));
    c.set_lr(1, 1e-3).unwrap();
    (2..4).for_each(|i| step(&mut c, &w3, &b3, i));
    assert!(w3.equal(&w1) && b3.equal(&b1), "resumed run diverged from the uninterrupted one");

    assert!(c.set_lr(2, 1.0).is_err());
    let missing: Vec<(String, Tensor)> = saved.into_iter().filter(|(n, _)| n != "w.exp_avg").collect();
    let err = c.load_state(&missing).unwrap_err().to_string();
    assert!(err.contains("w.exp_avg"), "{err}");
}

#[test]
fn known_labels_override_pseudo_labels_only_between_two_labelled_samples() {
    let n = 6;
    let w = Tensor::rand([n, n], (Kind::Float, Device::Cpu));
    let w = (&w + w.tr()) * 0.5;
    // Samples 0, 1 and 3 have known classes (7, 7, 2); the others are unknown.
    let labels = Tensor::from_slice(&[7i64, 7, -1, 2, -1, -1]);
    let out = with_known_labels(&w, &labels);
    for i in 0..n {
        for j in 0..n {
            let got = out.double_value(&[i, j]);
            let known = [0, 1, 3].contains(&i) && [0, 1, 3].contains(&j);
            let want = if !known {
                w.double_value(&[i, j])
            } else if (i < 2 && j < 2) || i == j {
                1.0
            } else {
                0.0
            };
            assert_eq!(got, want, "W[{i},{j}]");
        }
    }
}
