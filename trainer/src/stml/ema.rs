//! The momentum teacher: after every step each teacher parameter and buffer moves towards
//! the student's, `t <- m t + (1 - m) s` (docs/algorithm.md, "Networks"; the authors'
//! `Momentum_Update`). Tensors are matched by name; the teacher has no `head_f`, so its
//! names are a subset of the student's.

use std::collections::HashMap;

use tch::{nn::VarStore, TchError, Tensor};

/// Teacher tensors paired with the student tensors of the same name, resolved once so that
/// the per-step update does no name lookups.
#[derive(Debug)]
pub struct EmaPairs {
    /// Floating-point parameters and buffers: averaged.
    averaged: Vec<(Tensor, Tensor)>,
    /// Integer buffers (counters such as `num_batches_tracked`): copied.
    copied: Vec<(Tensor, Tensor)>,
}

impl EmaPairs {
    /// Pairs every variable of `teacher` with the student variable of the same name.
    ///
    /// Errors when a teacher variable has no student counterpart, or a different shape or
    /// kind (the two networks were built from different configurations).
    pub fn new(teacher: &VarStore, student: &VarStore) -> Result<Self, TchError> {
        let mut teacher: Vec<(String, Tensor)> = teacher.variables().into_iter().collect();
        teacher.sort_by(|a, b| a.0.cmp(&b.0));
        let student: Vec<(String, Tensor)> = student.variables().into_iter().collect();
        Self::from_named(&teacher, &student)
    }

    /// As [`EmaPairs::new`], from `(name, tensor)` lists.
    pub fn from_named(teacher: &[(String, Tensor)], student: &[(String, Tensor)]) -> Result<Self, TchError> {
        let by_name: HashMap<&str, &Tensor> = student.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let mut averaged = Vec::new();
        let mut copied = Vec::new();
        for (name, t) in teacher {
            let s = by_name.get(name.as_str()).ok_or_else(|| {
                TchError::TensorNameNotFound(
                    name.clone(),
                    "the student network (build the teacher and student from the same model config)".into(),
                )
            })?;
            if t.size() != s.size() || t.kind() != s.kind() {
                return Err(TchError::Shape(format!(
                    "teacher tensor {name} is {:?} {:?} but the student's is {:?} {:?}; build both from the same model config",
                    t.size(),
                    t.kind(),
                    s.size(),
                    s.kind()
                )));
            }
            let pair = (t.shallow_clone(), s.shallow_clone());
            if t.is_floating_point() {
                averaged.push(pair);
            } else {
                copied.push(pair);
            }
        }
        Ok(Self { averaged, copied })
    }

    /// Number of paired tensors.
    pub fn len(&self) -> usize {
        self.averaged.len() + self.copied.len()
    }

    /// True when no tensor is paired.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `t <- m t + (1 - m) s` for every floating tensor, `t <- s` for counters.
    ///
    /// `m = 1` leaves the teacher unchanged, `m = 0` copies the student (both exactly).
    pub fn momentum_update(&self, m: f64) {
        tch::no_grad(|| {
            for (t, s) in &self.averaged {
                // lerp: t + (1 - m) (s - t), exact at both ends.
                let _ = t.shallow_clone().lerp_(s, 1.0 - m);
            }
            self.copy_counters();
        })
    }

    /// Makes the teacher an exact copy of the student (at the start of training).
    pub fn copy_into(&self) {
        tch::no_grad(|| {
            for (t, s) in &self.averaged {
                t.shallow_clone().copy_(s);
            }
            self.copy_counters();
        })
    }

    fn copy_counters(&self) {
        for (t, s) in &self.copied {
            t.shallow_clone().copy_(s);
        }
    }
}

/// One momentum update of `teacher` towards `student` (see [`EmaPairs::momentum_update`]);
/// prefer building [`EmaPairs`] once when updating every step.
pub fn momentum_update(teacher: &VarStore, student: &VarStore, m: f64) -> Result<(), TchError> {
    EmaPairs::new(teacher, student)?.momentum_update(m);
    Ok(())
}

/// Copies every teacher tensor from the student tensor of the same name.
pub fn copy_into(teacher: &VarStore, student: &VarStore) -> Result<(), TchError> {
    EmaPairs::new(teacher, student)?.copy_into();
    Ok(())
}
