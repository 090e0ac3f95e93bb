//! Helpers for the end-to-end tests: small labelled image fixtures and a tiny, fast
//! training configuration.

use std::path::Path;

use image::{Rgb, RgbImage};

/// Writes a labelled folder (`root/<class>/<n>.png`) of `classes` x `per_class` small
/// synthetic images: each class is a shape in a colour, drawn at random positions, sizes
/// and brightness, so that classes are learnable but no two images are equal.
pub fn write_shapes(root: &Path, classes: usize, per_class: usize, size: u32) {
    let mut state = 0x1234_5678_u64;
    let mut rnd = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 10_000) as f32 / 10_000.0
    };
    for c in 0..classes {
        let dir = root.join(format!("class_{c}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let hue =
                [(230, 40, 40), (40, 200, 60), (40, 80, 230), (220, 200, 40), (200, 60, 200), (40, 200, 200)][c % 6];
            let cx = size as f32 * (0.3 + 0.4 * rnd());
            let cy = size as f32 * (0.3 + 0.4 * rnd());
            let r = size as f32 * (0.15 + 0.15 * rnd());
            let bright = 0.6 + 0.4 * rnd();
            let img = RgbImage::from_fn(size, size, |x, y| {
                let (dx, dy) = (x as f32 - cx, y as f32 - cy);
                let inside = match c % 3 {
                    0 => dx * dx + dy * dy < r * r,
                    1 => dx.abs() < r && dy.abs() < r,
                    _ => dx.abs() + dy.abs() < r,
                };
                if inside {
                    Rgb([(hue.0 as f32 * bright) as u8, (hue.1 as f32 * bright) as u8, (hue.2 as f32 * bright) as u8])
                } else {
                    let g = (20.0 + 30.0 * ((x + y) % 7) as f32 / 7.0) as u8;
                    Rgb([g, g, g])
                }
            });
            img.save(dir.join(format!("{i:03}.png"))).unwrap();
        }
    }
}

/// A configuration small enough to fit in seconds on a CPU: `f` 16-d, `g` 32-d (served),
/// 32 px, batches of 10 (2 queries with 5 neighbours), `epochs` epochs of at most 2 steps.
pub fn tiny_config(data: &Path, epochs: usize) -> trainer::config::TrainConfig {
    let mut cfg = trainer::config::TrainConfig::defaults(data.to_path_buf());
    cfg.model.dim = 16;
    cfg.model.g_dim = 32;
    cfg.model.image_size = 32;
    cfg.sampling_size = 36;
    cfg.optim.batch_size = 10;
    cfg.stml.num_neighbors = 5;
    cfg.optim.epochs = epochs;
    cfg.optim.max_steps_per_epoch = 2;
    cfg.threads = 2;
    cfg.device = trainer::config::DeviceKind::Cpu;
    cfg
}
