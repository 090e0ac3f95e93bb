//! Retrieval metrics on hand-computed cases, chunked k-NN against brute force, and the
//! memory bound of the chunked search (measured by a counting allocator).
// The counting allocator below must implement `GlobalAlloc`, an unsafe trait.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use approx::assert_abs_diff_eq;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use trainer::eval::{
    average_precision_at_r, evaluate, kmeans, knn, map_at_r, nmi, recall_at_k, squared_euclidean, Distance, EvalError,
    KMeansOptions,
};

/// Counts live heap bytes and their peak, so a test can bound what a call allocates.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Six points on a line, x = 0, 1, 3, 6, 10, 15, labels 0 0 1 1 0 1. Neighbours by hand
/// (ties to the lower index): 0 -> 1 2 3 4 5; 1 -> 0 2 3 4 5; 2 -> 1 0 3 4 5 (0 and 3 both
/// at distance 3); 3 -> 2 4 1 0 5; 4 -> 3 5 2 1 0; 5 -> 4 3 2 1 0.
const LINE: [f32; 6] = [0.0, 1.0, 3.0, 6.0, 10.0, 15.0];
const LINE_LABELS: [u32; 6] = [0, 0, 1, 1, 0, 1];
const LINE_KNN: [[u32; 5]; 6] =
    [[1, 2, 3, 4, 5], [0, 2, 3, 4, 5], [1, 0, 3, 4, 5], [2, 4, 1, 0, 5], [3, 5, 2, 1, 0], [4, 3, 2, 1, 0]];

fn line_knn_labels() -> Vec<u32> {
    LINE_KNN.iter().flatten().map(|&j| LINE_LABELS[j as usize]).collect()
}

#[test]
fn knn_on_the_line_matches_the_hand_computed_lists() {
    let nb = knn(&LINE, 1, 5, Distance::Euclidean, 1 << 20).unwrap();
    assert_eq!(nb.k, 5);
    for (i, want) in LINE_KNN.iter().enumerate() {
        assert_eq!(nb.row(i), want, "query {i}");
    }
    // Squared distances: query 3 (x = 6) to x = 3, 10, 1, 0, 15.
    assert_eq!(&nb.distances[15..20], &[9.0, 16.0, 25.0, 36.0, 81.0]);
    // k larger than n - 1 is capped.
    assert_eq!(knn(&LINE, 1, 50, Distance::Euclidean, 1 << 20).unwrap().k, 5);
}

#[test]
fn recall_at_k_by_hand() {
    // Neighbour labels: q0 0 1 1 0 1 | q1 0 1 1 0 1 | q2 0 0 1 0 1 | q3 1 0 0 0 1 |
    // q4 1 1 1 0 0 | q5 0 1 1 0 0. First same-label position: 1, 1, 3, 1, 4, 2.
    let r = recall_at_k(&line_knn_labels(), &LINE_LABELS, &[1, 2, 3, 4]);
    assert_eq!(r, vec![3.0 / 6.0, 4.0 / 6.0, 5.0 / 6.0, 1.0]);
}

#[test]
fn map_at_r_by_hand() {
    // Each class has 3 members, so R = 2 for every query. AP@2 over the first two labels:
    // q0 [0 1] -> (1/1)/2; q1 the same; q2 [0 0] -> 0; q3 [1 0] -> 1/2; q4 [1 1] -> 0;
    // q5 [0 1] -> (1/2)/2.
    let want = (0.5 + 0.5 + 0.0 + 0.5 + 0.0 + 0.25) / 6.0;
    assert_abs_diff_eq!(map_at_r(&line_knn_labels(), &LINE_LABELS), want, epsilon = 1e-12);
    // R = 10, relevant at ranks 1, 3, 4, 7 out of ten.
    let row = [1, 0, 1, 1, 0, 0, 1, 0, 0, 0];
    let ap = average_precision_at_r(&row, 1, 10).unwrap();
    assert_abs_diff_eq!(ap, (1.0 + 2.0 / 3.0 + 3.0 / 4.0 + 4.0 / 7.0) / 10.0, epsilon = 1e-12);
    assert_eq!(average_precision_at_r(&row, 1, 0), None);
    // A query alone in its class is left out of the mean.
    assert_abs_diff_eq!(map_at_r(&[0, 9, 9, 0, 0, 0], &[0, 0, 9]), 0.5, epsilon = 1e-12);
}

#[test]
fn nmi_by_hand() {
    let ln = f64::ln;
    // labels 000111, clusters 001111: p(y) = 1/2 1/2, p(c) = 1/3 2/3,
    // joint (0,0) 2/6, (0,1) 1/6, (1,1) 3/6.
    let h_y = ln(2.0);
    let h_c = -(1.0 / 3.0 * ln(1.0 / 3.0) + 2.0 / 3.0 * ln(2.0 / 3.0));
    let mi = 2.0 / 6.0 * ln((2.0 / 6.0) / (0.5 / 3.0))
        + 1.0 / 6.0 * ln((1.0 / 6.0) / (0.5 * 2.0 / 3.0))
        + 3.0 / 6.0 * ln((3.0 / 6.0) / (0.5 * 2.0 / 3.0));
    let got = nmi(&[0, 0, 0, 1, 1, 1], &[0, 0, 1, 1, 1, 1]);
    assert_abs_diff_eq!(got, 2.0 * mi / (h_y + h_c), epsilon = 1e-12);
    assert_abs_diff_eq!(got, 0.478_704, epsilon = 1e-6);
    // A relabelled perfect clustering, and an independent one.
    assert_abs_diff_eq!(nmi(&[0, 0, 1, 1, 2], &[7, 7, 3, 3, 5]), 1.0, epsilon = 1e-12);
    assert_abs_diff_eq!(nmi(&[0, 0, 1, 1], &[0, 1, 0, 1]), 0.0, epsilon = 1e-12);
}

fn random_points(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n * dim).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

/// Explicit-loop reference: all distances, full sort by (distance, index).
fn brute_force(x: &[f32], dim: usize, k: usize) -> Vec<Vec<(u32, f32)>> {
    let n = x.len() / dim;
    (0..n)
        .map(|i| {
            let mut all: Vec<(u32, f32)> = (0..n)
                .filter(|&j| j != i)
                .map(|j| (j as u32, squared_euclidean(&x[i * dim..(i + 1) * dim], &x[j * dim..(j + 1) * dim])))
                .collect();
            all.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
            all.truncate(k);
            all
        })
        .collect()
}

#[test]
fn chunked_knn_equals_brute_force() {
    let (n, dim, k) = (103, 5, 6);
    let x = random_points(n, dim, 1);
    let reference = brute_force(&x, dim, k);
    // Query blocks of 1, 7 and 10 (none divides 103) and one block for everything.
    for scratch in [1, 7 * n, 10 * n, 1 << 24] {
        let nb = knn(&x, dim, k, Distance::Euclidean, scratch).unwrap();
        for (i, want) in reference.iter().enumerate() {
            let got: Vec<(u32, f32)> = (0..k).map(|c| (nb.indices[i * k + c], nb.distances[i * k + c])).collect();
            assert_eq!(&got, want, "scratch {scratch}, query {i}");
        }
    }
}

#[test]
fn cosine_ignores_scale_and_reports_one_minus_cos() {
    let (n, dim) = (40, 3);
    let x = random_points(n, dim, 2);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut scaled = x.clone();
    for row in scaled.chunks_exact_mut(dim) {
        let s = rng.gen_range(0.1f32..10.0);
        row.iter_mut().for_each(|v| *v *= s);
    }
    let a = knn(&x, dim, 4, Distance::Cosine, 100).unwrap();
    let b = knn(&scaled, dim, 4, Distance::Cosine, 100).unwrap();
    assert_eq!(a.indices, b.indices);
    let row = |i: usize| &x[i * dim..(i + 1) * dim];
    let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>().sqrt();
    let j = a.indices[0] as usize;
    let cos = row(0).iter().zip(row(j)).map(|(p, q)| p * q).sum::<f32>() / (norm(row(0)) * norm(row(j)));
    assert_abs_diff_eq!(a.distances[0], 1.0 - cos, epsilon = 1e-5);
}

/// Three tight, far-apart blobs of 30 points in 4-d, labelled by blob.
fn blobs() -> (Vec<f32>, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let centres = [[10.0f32, 0.0, 0.0, 0.0], [0.0, 10.0, 0.0, 0.0], [0.0, 0.0, 10.0, 0.0]];
    let (mut x, mut labels) = (Vec::new(), Vec::new());
    for i in 0..90 {
        let c = i % 3;
        x.extend(centres[c].iter().map(|&m| m + rng.gen_range(-1.0f32..1.0)));
        labels.push(c as u32);
    }
    (x, labels)
}

#[test]
fn kmeans_finds_separated_blobs_deterministically() {
    let (x, labels) = blobs();
    let opts = KMeansOptions { seed: 11, max_iter: 50 };
    let c = kmeans(&x, 4, 3, &opts);
    assert_abs_diff_eq!(nmi(&labels, &c), 1.0, epsilon = 1e-12);
    assert_eq!(c, kmeans(&x, 4, 3, &opts));
    // More clusters than points is capped; every point gets its own.
    let two = kmeans(&x[..8], 4, 5, &opts);
    assert_ne!(two[0], two[1]);
}

#[test]
fn evaluate_reports_all_metrics() {
    let r = evaluate(&LINE, 1, &LINE_LABELS, &[1, 2, 4], Distance::Euclidean).unwrap();
    assert_eq!((r.queries, r.classes), (6, 2));
    assert_eq!(r.recall, vec![(1, 0.5), (2, 4.0 / 6.0), (4, 1.0)]);
    assert_eq!(r.recall_at(2), Some(4.0 / 6.0));
    assert_abs_diff_eq!(r.map_at_r, 1.75 / 6.0, epsilon = 1e-12);
    let clusters = kmeans(&LINE, 1, 2, &KMeansOptions { seed: trainer::eval::KMEANS_SEED, ..Default::default() });
    assert_abs_diff_eq!(r.nmi, nmi(&LINE_LABELS, &clusters), epsilon = 1e-12);

    let (x, labels) = blobs();
    let r = evaluate(&x, 4, &labels, &[1, 8], Distance::Cosine).unwrap();
    assert_eq!(r.recall, vec![(1, 1.0), (8, 1.0)]);
    assert_abs_diff_eq!(r.map_at_r, 1.0, epsilon = 1e-12);
    assert_abs_diff_eq!(r.nmi, 1.0, epsilon = 1e-12);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["recall"][1], serde_json::json!([8, 1.0]));
    assert_eq!(json["map_at_r"], serde_json::json!(1.0));
}

#[test]
fn evaluate_rejects_bad_inputs() {
    assert!(matches!(evaluate(&[1.0; 7], 2, &[0, 0, 0], &[1], Distance::Euclidean), Err(EvalError::Shape { .. })));
    assert!(matches!(evaluate(&[1.0; 6], 2, &[0, 0], &[1], Distance::Euclidean), Err(EvalError::Labels { .. })));
    assert!(matches!(evaluate(&[1.0; 2], 2, &[0], &[1], Distance::Euclidean), Err(EvalError::TooFew(1))));
    let err = evaluate(&[0.0, 1.0, f32::NAN, 0.0], 2, &[0, 1], &[1], Distance::Euclidean).unwrap_err();
    assert!(matches!(err, EvalError::NotFinite { point: 1 }), "{err}");
}

#[test]
fn knn_of_20k_points_never_builds_the_n_by_n_matrix() {
    let (n, dim, k) = (20_000, 4, 5);
    let x = random_points(n, dim, 5);
    let scratch = 1 << 20; // 4 MiB of distances per query block
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let nb = knn(&x, dim, k, Distance::Euclidean, scratch).unwrap();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    // The full matrix would be n * n * 4 bytes = 1.6 GB; blocks on a few threads, the
    // per-query candidate lists and the [n, k] result stay far below 64 MiB.
    assert!(peak < 64 << 20, "peak {peak} bytes");
    // Spot-check a few rows against the explicit loop.
    for i in [0usize, 7_777, 19_999] {
        let mut all: Vec<(f32, u32)> = (0..n)
            .filter(|&j| j != i)
            .map(|j| (squared_euclidean(&x[i * dim..(i + 1) * dim], &x[j * dim..(j + 1) * dim]), j as u32))
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let want: Vec<u32> = all[..k].iter().map(|p| p.1).collect();
        assert_eq!(nb.row(i), &want[..]);
    }
}
