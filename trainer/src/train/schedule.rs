//! The learning-rate schedule: the paper's cosine annealing stepped once per epoch, times
//! an optional linear warm-up over the first steps (a departure, docs/algorithm.md).

use crate::config::TrainConfig;
use crate::optim::cosine_lr;

/// The learning-rate factor of step `step` (0-based, counted over the whole run) in
/// `epoch`, for an epoch of `steps_per_epoch` steps.
pub fn lr_factor(cfg: &TrainConfig, epoch: usize, step: usize, steps_per_epoch: usize) -> f64 {
    let o = &cfg.optim;
    let cosine = if o.fix_lr { 1.0 } else { cosine_lr(1.0, epoch, o.epochs, 0.0) };
    let warmup = (o.warmup_epochs * steps_per_epoch as f64).round();
    let ramp = if warmup >= 1.0 { ((step + 1) as f64 / warmup).min(1.0) } else { 1.0 };
    cosine * ramp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_ramps_linearly_then_the_cosine_steps_per_epoch() {
        let mut c = TrainConfig::defaults("x".into());
        c.optim.epochs = 2;
        c.optim.warmup_epochs = 0.5; // 10 steps per epoch: a 5-step ramp
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(lr_factor(&c, 0, 0, 10), 0.2));
        assert!(close(lr_factor(&c, 0, 3, 10), 0.8));
        assert!(close(lr_factor(&c, 0, 4, 10), 1.0));
        assert!(close(lr_factor(&c, 0, 9, 10), 1.0));
        assert!(close(lr_factor(&c, 1, 10, 10), 0.5)); // (1 + cos(pi / 2)) / 2
        c.optim.warmup_epochs = 0.0;
        assert!(close(lr_factor(&c, 0, 0, 10), 1.0));
        c.optim.fix_lr = true;
        assert!(close(lr_factor(&c, 1, 10, 10), 1.0));
    }
}
